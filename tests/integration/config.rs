//! Bad configuration exits 64 naming the key; layers apply in order.

use std::process::Command;

fn pulsegate(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pulsegate"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pulsegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_64_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[ws]\nmax_connections = 0\n").unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[ws]\nmax_conections = 5\n").unwrap();
    let bad_file = file.to_str().unwrap();
    let unknown_file = unknown.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["serve", "--listen", "nonsense"], vec![], "listen"),
        (
            vec!["serve", "--redis-url", "http://x"],
            vec![],
            "redis.url",
        ),
        (vec!["serve", "--log-format", "xml"], vec![], "log.format"),
        (
            vec!["serve", "--config", bad_file],
            vec![],
            "ws.max_connections",
        ),
        (
            vec!["serve", "--config", unknown_file],
            vec![],
            "max_conections",
        ),
        (
            vec!["serve", "--config", "/does/not/exist.toml"],
            vec![],
            "config",
        ),
        (
            vec!["serve"],
            vec![("PULSEGATE_WS_PING_INTERVAL", "soon")],
            "ws.ping_interval",
        ),
        (vec!["serve"], vec![("REDIS_URL", "nope")], "redis.url"),
        // Sentinel without its service name; a Cluster URL without a host.
        (
            vec!["serve", "--redis-url", "redis-sentinel://127.0.0.1:26379"],
            vec![],
            "redis.url",
        ),
        (
            vec!["serve"],
            vec![("REDIS_URL", "redis-cluster://")],
            "redis.url",
        ),
        (
            vec!["serve"],
            vec![("DATABASE_URL", "mysql://x")],
            "database.url",
        ),
        // The deadline must leave room for the grace and the paced window.
        (
            vec!["serve"],
            vec![
                ("PULSEGATE_SHUTDOWN_LB_GRACE", "2s"),
                ("PULSEGATE_SHUTDOWN_DRAIN_WINDOW", "10s"),
                ("PULSEGATE_SHUTDOWN_DRAIN_TIMEOUT", "5s"),
            ],
            "shutdown.drain_timeout",
        ),
    ];
    for (args, env, key) in cases {
        let (code, _, stderr) = pulsegate(&args, &env);
        assert_eq!(code, 64, "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{args:?} {env:?} should name `{key}`: {stderr}"
        );
    }
}

#[test]
fn layers_apply_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1111\"\n[redis]\nurl = \"redis://file:1\"\nkey_prefix = \"fromfile\"\n[ws]\nmax_subscriptions = 7\n").unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = pulsegate(&["config", "--config", f], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["listen"], "127.0.0.1:1111");
    assert_eq!(v["redis"]["url"], "redis://file:1");
    assert_eq!(v["ws"]["max_subscriptions"], 7);

    let env = [
        ("REDIS_URL", "redis://plain:2"),
        ("PULSEGATE_WS_MAX_SUBSCRIPTIONS", "9"),
    ];
    let (_, out, _) = pulsegate(&["config", "--config", f], &env);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["redis"]["url"], "redis://plain:2",
        "REDIS_URL over the file"
    );
    assert_eq!(v["ws"]["max_subscriptions"], 9, "PULSEGATE_* over the file");
    assert_eq!(v["redis"]["key_prefix"], "fromfile");

    let env = [
        ("REDIS_URL", "redis://plain:2"),
        ("PULSEGATE_REDIS_URL", "redis://prefixed:3"),
        ("PULSEGATE_LISTEN", "127.0.0.1:2222"),
    ];
    let (_, out, _) = pulsegate(
        &["config", "--config", f, "--listen", "127.0.0.1:3333"],
        &env,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["redis"]["url"], "redis://prefixed:3",
        "PULSEGATE_REDIS_URL over REDIS_URL"
    );
    assert_eq!(v["listen"], "127.0.0.1:3333", "flags over everything");

    let (_, out, _) = pulsegate(&["config", "--redis-url", "redis://:s3cret@h:1"], &[]);
    assert!(!out.contains("s3cret"), "passwords are not printed: {out}");
}
