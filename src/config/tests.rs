//! The configuration's three written forms held to the code: the defaults
//! in `Default`, the reference table in `docs/configuration.md`, and the
//! sample `config/pulsegate.toml`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Config;

/// Every key of the config with its default as the reference table writes it.
fn defaults() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let value = serde_json::to_value(Config::default()).expect("the defaults serialize");
    flatten("", &value, &mut out);
    // What a `[[channels]]` entry gets for a key it leaves out.
    let entry = serde_json::to_value(super::NamespaceConfig::default()).expect("serializes");
    flatten("channels[]", &entry, &mut out);
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        // A rate (`{ per_second, burst }`) is one setting.
        Value::Object(m) if m.contains_key("per_second") => {
            let rate = match (m["per_second"].as_u64(), m["burst"].as_u64()) {
                (Some(0), _) => "off".to_owned(),
                (Some(r), Some(b)) => format!("{r}/s, burst {b}"),
                _ => v.to_string(),
            };
            out.insert(prefix.to_owned(), rate);
        }
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {
            out.insert(prefix.to_owned(), "none".to_owned());
        }
        Value::Array(a) if a.is_empty() => {
            out.insert(prefix.to_owned(), "none".to_owned());
        }
        // A list of tables (`[[channels]]`): the names of the default entries.
        Value::Array(a) if a.iter().all(|e| e.get("name").is_some()) => {
            let names: Vec<&str> = a.iter().filter_map(|e| e["name"].as_str()).collect();
            out.insert(prefix.to_owned(), names.join(", "));
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The rows of the reference tables: `| \`key\` | default | meaning |`.
fn documented() -> BTreeMap<String, String> {
    let doc = include_str!("../../docs/configuration.md");
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let key = cells[1].trim_matches('`').to_owned();
        let default = cells[2].trim_matches('`').to_owned();
        out.insert(key, default);
    }
    out
}

#[test]
fn every_key_is_documented_with_its_default() {
    let code = defaults();
    let doc = documented();
    let missing: Vec<_> = code.keys().filter(|k| !doc.contains_key(*k)).collect();
    let unknown: Vec<_> = doc.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md lacks {missing:?} and lists keys the code does not have: {unknown:?}"
    );
    for (key, default) in &code {
        assert_eq!(
            &doc[key], default,
            "docs/configuration.md gives `{key}` the default `{}`; the code has `{default}`",
            doc[key]
        );
    }
}

#[test]
fn the_sample_file_holds_the_defaults() {
    use figment::providers::{Format, Toml};
    let sample: Config =
        figment::Figment::from(Toml::string(include_str!("../../config/pulsegate.toml")))
            .extract()
            .expect("config/pulsegate.toml parses");
    let sample = serde_json::to_value(sample).expect("serializes");
    let default = serde_json::to_value(Config::default()).expect("serializes");
    assert_eq!(
        sample, default,
        "config/pulsegate.toml drifted from Default"
    );
}

#[test]
fn the_defaults_are_valid() {
    Config::default().validate().expect("the defaults validate");
}

/// Prints the reference rows for a new key: `cargo test -p pulsegate --lib
/// config::tests::print_defaults -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_defaults() {
    for (k, v) in defaults() {
        println!("| `{k}` | {v} | |");
    }
}
