//! The Dockerfile can build what the source embeds: every file named by an
//! `include_str!`/`include_bytes!`/`include!` in the release build is copied
//! into the builder stage, to the same relative place, and not excluded by
//! `.dockerignore` (an image that compiles on a laptop but not from the
//! build context fails only at `docker build`, where nobody runs tests).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lexically resolve `a/b/../c` (the files need not exist for this).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Repo-relative paths of the files the release build embeds. Embeds in a
/// test module (`tests.rs`, or after `#[cfg(test)] mod …` at the end of a
/// file, this codebase's layout) are only compiled by `cargo test`.
fn embedded_files() -> Vec<String> {
    let root = repo();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut embeds = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        let test_mod_at = lines
            .windows(2)
            .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
            .unwrap_or(lines.len());
        for line in &lines[..test_mod_at] {
            for mac in ["include_str!(", "include_bytes!(", "include!("] {
                let mut rest = *line;
                while let Some(at) = rest.find(mac) {
                    rest = &rest[at + mac.len()..];
                    let arg = rest.trim_start();
                    let Some(lit) = arg.strip_prefix('"') else {
                        panic!(
                            "{}: {mac}…) without a plain string literal; teach this test to read it",
                            file.display()
                        );
                    };
                    let end = lit.find('"').expect("closing quote");
                    let target = normalize(&file.parent().expect("parent").join(&lit[..end]));
                    let rel = target.strip_prefix(&root).unwrap_or_else(|_| {
                        panic!("{} embeds a file outside the repo", file.display())
                    });
                    embeds.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    embeds.sort();
    embeds.dedup();
    embeds
}

/// (source, destination) of every plain `COPY` in the builder stage (the
/// stages before the one the binary is copied out of).
fn builder_copies(dockerfile: &str) -> Vec<(String, String)> {
    let mut copies = Vec::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with("FROM ") && line.contains(" AS runtime") {
            break;
        }
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        assert!(
            !args.trim_start().starts_with('['),
            "JSON-form COPY is not read by this test: {line}"
        );
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        assert!(
            !args.contains("--from"),
            "COPY --from in the builder stage: {line}"
        );
        let (dest, sources) = words.split_last().expect("COPY with arguments");
        for src in sources {
            copies.push((src.to_string(), dest.to_string()));
        }
    }
    copies
}

/// The WORKDIR-relative destination a COPY gives `file`, when `src` covers it.
fn copied_to(file: &str, src: &str, dest: &str) -> Option<String> {
    let dest_dir = dest.trim_start_matches("./").trim_end_matches('/');
    let dest_dir = if dest_dir == "." { "" } else { dest_dir };
    let join = |rel: &str| {
        if dest_dir.is_empty() {
            rel.to_string()
        } else {
            format!("{dest_dir}/{rel}")
        }
    };
    let src_dir = src.trim_end_matches('/');
    if file == src_dir {
        // A single file: into a directory destination, or renamed.
        if dest.ends_with('/') || dest_dir.is_empty() {
            Some(join(Path::new(file).file_name()?.to_str()?))
        } else {
            Some(dest_dir.to_string())
        }
    } else {
        // A directory's contents land under the destination.
        file.strip_prefix(&format!("{src_dir}/")).map(join)
    }
}

/// Docker's `.dockerignore` matching: Go `filepath.Match` patterns plus
/// `**`, a leading `!` re-includes, the last matching line wins, and a
/// pattern that matches a directory excludes everything under it.
fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(b'*') if pattern.starts_with(b"**") => {
            let rest = pattern[2..].strip_prefix(b"/").unwrap_or(&pattern[2..]);
            (0..=path.len())
                .any(|i| (i == 0 || path[i - 1] == b'/') && glob_match(rest, &path[i..]))
        }
        Some(b'*') => (0..=path.len())
            .take_while(|&i| i == 0 || path[i - 1] != b'/')
            .any(|i| glob_match(&pattern[1..], &path[i..])),
        Some(b'?') => !path.is_empty() && path[0] != b'/' && glob_match(&pattern[1..], &path[1..]),
        Some(&c) => !path.is_empty() && path[0] == c && glob_match(&pattern[1..], &path[1..]),
    }
}

fn ignored(dockerignore: &str, file: &str) -> Option<String> {
    let mut verdict = None;
    for raw in dockerignore.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keep, pat) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pat = pat.trim_start_matches('/').trim_end_matches('/');
        // The file itself or any directory above it.
        let mut prefixes = vec![file.to_string()];
        let mut p = file;
        while let Some(at) = p.rfind('/') {
            p = &p[..at];
            prefixes.push(p.to_string());
        }
        if prefixes
            .iter()
            .any(|p| glob_match(pat.as_bytes(), p.as_bytes()))
        {
            verdict = if keep { None } else { Some(raw.to_string()) };
        }
    }
    verdict
}

#[test]
fn every_embedded_file_is_in_the_docker_build_context() {
    let root = repo();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    let embeds = embedded_files();
    // Guard against this test reading nothing and passing.
    for known in [
        "lua/pulse.lua",
        "ui/dashboard.html",
        "clients/js/pulsegate.js",
    ] {
        assert!(
            embeds.iter().any(|e| e == known),
            "{known} not found among {embeds:?}"
        );
    }
    let copies = builder_copies(&dockerfile);
    let mut problems = Vec::new();
    for file in &embeds {
        assert!(
            root.join(file).is_file(),
            "{file} is embedded but does not exist"
        );
        let landings: Vec<String> = copies
            .iter()
            .filter_map(|(src, dest)| copied_to(file, src, dest))
            .collect();
        if !landings.iter().any(|l| l == file) {
            problems.push(format!(
                "{file}: no COPY in the builder stage puts it at {file} (copied to: {landings:?})"
            ));
        }
        if let Some(line) = ignored(&dockerignore, file) {
            problems.push(format!("{file}: excluded by .dockerignore line `{line}`"));
        }
    }
    assert!(
        problems.is_empty(),
        "the Docker build would miss embedded files:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_matchers_read_docker_syntax() {
    let ignore = "target/\n**/node_modules/\n*.md\n!README.md\n.git\n";
    assert!(ignored(ignore, "target/release/x").is_some());
    assert!(ignored(ignore, "tests/browser/node_modules/a/b.js").is_some());
    assert!(ignored(ignore, "docs.md").is_some());
    assert!(ignored(ignore, "README.md").is_none());
    assert!(
        ignored(ignore, "docs/deploy.md").is_none(),
        "`*` does not cross /"
    );
    assert!(ignored(ignore, ".github/x").is_none());
    assert!(ignored(ignore, "ui/app.js").is_none());

    assert_eq!(
        copied_to("ui/app.js", "ui/", "ui/").as_deref(),
        Some("ui/app.js")
    );
    assert_eq!(
        copied_to("ui/app.js", "ui", "./").as_deref(),
        Some("app.js")
    );
    assert_eq!(
        copied_to("Cargo.lock", "Cargo.lock", "./").as_deref(),
        Some("Cargo.lock")
    );
    assert_eq!(
        copied_to(
            "clients/js/pulsegate.js",
            "clients/js/pulsegate.js",
            "clients/js/pulsegate.js"
        )
        .as_deref(),
        Some("clients/js/pulsegate.js")
    );
    assert_eq!(copied_to("ui/app.js", "src/", "src/"), None);
    let copies =
        builder_copies("COPY a b ./\nCOPY --chown=1 c/ c/\nFROM x AS runtime\nCOPY d/ d/\n");
    assert_eq!(
        copies,
        vec![
            ("a".into(), "./".into()),
            ("b".into(), "./".into()),
            ("c/".into(), "c/".into())
        ]
    );
}
