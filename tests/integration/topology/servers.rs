//! Real Redis Cluster and Sentinel deployments on free loopback ports, one
//! per test, from Debian's redis-server (the same topologies as
//! scripts/redis-cluster.sh and scripts/redis-sentinel.sh, which use fixed
//! ports). Every process is killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::config::ServerConfig;
use tempfile::TempDir;

use crate::common::free_port;

fn redis_server() -> String {
    std::env::var("PULSEGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn redis_cli() -> String {
    std::env::var("PULSEGATE_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// One redis-server (or sentinel) process.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(dir: &TempDir, port: u16, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(redis_server())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/ensure-redis.sh)");
        Self {
            port,
            child: Some(child),
        }
    }

    /// SIGKILL: no chance to hand anything over.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -<sig>`: STOP freezes the node (its sockets stay open), CONT
    /// resumes it.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig}");
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis on {} did not start", self.port);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster-enabled node on a free port, not yet part of any cluster.
fn cluster_node(dir: &TempDir) -> Node {
    let port = free_cluster_port();
    let conf = format!("nodes-{port}.conf");
    Node::start(
        dir,
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            "2000",
            // Else a replica of a primary idle for a while refuses to take
            // over ("Disconnected from master for longer than allowed").
            "--cluster-replica-validity-factor",
            "0",
        ],
    )
}

/// A free port whose cluster bus port (port + 10000, bound on every
/// address) is free too: with many loopback sockets open on the machine, a
/// bus port taken by someone's ephemeral port made the node exit at start.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        if std::net::TcpListener::bind(("0.0.0.0", bus)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli ARGS…`: whether it exited 0, and its stdout.
pub fn cli_run(args: &[String]) -> (bool, String) {
    let out = Command::new(redis_cli())
        .args(args)
        .output()
        .expect("redis-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A Redis Cluster: `primaries` × (1 + `replicas`) nodes, node timeout 2 s.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    _dir: TempDir,
}

impl RedisCluster {
    pub async fn spawn(primaries: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(cluster_node(&dir));
        }
        for n in &nodes {
            n.wait_listening().await;
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(Node::addr));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new(redis_cli())
            .args(&args)
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_ok(primaries).await;
        cluster
    }

    /// `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let first = self.nodes[0].addr();
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node={}", n.addr()))
            .collect();
        format!("redis-cluster://{first}?{}", others.join("&"))
    }

    /// A cluster client for the test (as any publisher).
    pub async fn client(&self) -> Client {
        let mut config = Config::from_url(&self.url()).expect("url");
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .set_policy(ReconnectPolicy::new_constant(0, 100))
            .build()
            .expect("client");
        client.init().await.expect("connect to the cluster");
        client
    }

    /// Waits until every live node says `cluster_state:ok` and `primaries`
    /// nodes are primaries owning slots.
    pub async fn wait_ok(&self, primaries: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ok = true;
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                let out = cli(n.port, &["CLUSTER", "INFO"]);
                ok &= out.contains("cluster_state:ok")
                    && out.contains(&format!("cluster_size:{primaries}"));
            }
            // Every live replica has its primary's link up (a replica that
            // never synced would lose everything on a failover).
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                let repl = cli(n.port, &["INFO", "replication"]);
                ok &= repl.contains("role:master") || repl.contains("master_link_status:up");
            }
            if ok && self.primaries().len() == primaries {
                return;
            }
            assert!(Instant::now() < deadline, "cluster not ok in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of each live node that is a primary with slots, with its
    /// slot ranges, as a live node sees the cluster.
    pub fn primaries(&self) -> Vec<(usize, Vec<(u16, u16)>)> {
        let Some(live) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        let out = cli(live.port, &["CLUSTER", "NODES"]);
        let mut found = Vec::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let Some(i) = self.nodes.iter().position(|n| n.port == port) else {
                continue;
            };
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            found.push((i, ranges));
        }
        found
    }

    /// Starts one more node and joins it with `redis-cli --cluster
    /// add-node` (a primary without slots); returns its index once every
    /// node agrees on the configuration (`redis-cli --cluster check`).
    pub async fn add_node(&mut self) -> usize {
        let node = cluster_node(&self._dir);
        node.wait_listening().await;
        let (ok, out) = cli_run(&[
            "--cluster".into(),
            "add-node".into(),
            node.addr(),
            self.nodes[0].addr(),
        ]);
        assert!(ok, "add-node: {out}");
        let id = cli(node.port, &["CLUSTER", "MYID"]).trim().to_owned();
        self.nodes.push(node);
        // The MEET spreads by gossip: every node must know it first.
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = self.nodes[self.nodes.len() - 1].port;
        while self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .any(|n| !cli(n.port, &["CLUSTER", "NODES"]).contains(&id))
            // A new node answers CLUSTERDOWN until it has seen every slot.
            || !cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        {
            assert!(
                Instant::now() < deadline,
                "the new node is not known everywhere"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_agreed().await;
        self.nodes.len() - 1
    }

    /// Waits until `redis-cli --cluster check` passes (every node agrees
    /// on the slots, none open or importing).
    pub async fn wait_agreed(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out) = cli_run(&["--cluster".into(), "check".into(), self.nodes[0].addr()]);
            if ok && !out.contains("[ERR]") && !out.contains("[WARNING]") {
                return;
            }
            assert!(Instant::now() < deadline, "cluster check: {out}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Indexes of the nodes replicating node `i` (`CLUSTER REPLICAS`).
    pub fn replicas_of(&self, i: usize) -> Vec<usize> {
        let id = cli(self.nodes[i].port, &["CLUSTER", "MYID"]);
        let Some(live) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        cli(live.port, &["CLUSTER", "REPLICAS", id.trim()])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|a| a.split('@').next()?.rsplit(':').next()?.parse::<u16>().ok())
            .filter_map(|port| self.nodes.iter().position(|n| n.port == port))
            .collect()
    }

    /// A plain client of node `i` alone: a publisher that does not wait
    /// for the rest of the Cluster (a cluster client stops all its
    /// commands while it reconnects to a dead node).
    pub async fn node_client(&self, i: usize) -> Client {
        let config = Config {
            server: ServerConfig::new_centralized("127.0.0.1", self.nodes[i].port),
            ..Default::default()
        };
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .build()
            .expect("client");
        client.init().await.expect("connect to the node");
        client
    }

    /// The node index owning `slot`.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.primaries()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(i, _)| i)
    }
}

/// `redis-cli -p PORT args...`, stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(redis_cli())
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Sentinel deployment: a primary, a replica and three sentinels
/// watching it as `pulse` (quorum 2, down after 1 s).
pub struct RedisSentinel {
    pub primary: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: TempDir,
}

pub const SERVICE: &str = "pulse";

impl RedisSentinel {
    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let primary = Node::start(&dir, free_port(), &[]);
        primary.wait_listening().await;
        let replica_port = free_port();
        let of = primary.port.to_string();
        let replica = Node::start(&dir, replica_port, &["--replicaof", "127.0.0.1", &of]);
        replica.wait_listening().await;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {SERVICE} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\nsentinel failover-timeout {SERVICE} 5000\n\
                     sentinel parallel-syncs {SERVICE} 1\n",
                    dir.path().display(),
                    primary.port
                ),
            )
            .expect("sentinel conf");
            let child = Command::new(redis_server())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            let node = Node {
                port,
                child: Some(child),
            };
            node.wait_listening().await;
            sentinels.push(node);
        }
        let deployment = Self {
            primary,
            replica,
            sentinels,
            _dir: dir,
        };
        // The replica is in sync and every sentinel knows both.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let repl = cli(deployment.replica.port, &["INFO", "replication"]);
            let known = deployment.sentinels.iter().all(|s| {
                cli(s.port, &["SENTINEL", "REPLICAS", SERVICE]).contains(&replica_port.to_string())
            });
            if repl.contains("master_link_status:up") && known {
                break;
            }
            assert!(Instant::now() < deadline, "sentinel deployment not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        deployment
    }

    pub fn url(&self) -> String {
        let first = self.sentinels[0].addr();
        let others: String = self.sentinels[1..]
            .iter()
            .map(|n| format!("&node={}", n.addr()))
            .collect();
        format!("redis-sentinel://{first}?sentinelServiceName={SERVICE}{others}")
    }

    /// A client that follows the primary through the sentinels.
    pub async fn client(&self) -> Client {
        let mut config = Config::from_url(&self.url()).expect("url");
        config.fail_fast = false;
        assert!(matches!(config.server, ServerConfig::Sentinel { .. }));
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .set_policy(ReconnectPolicy::new_constant(0, 100))
            .build()
            .expect("client");
        client.init().await.expect("connect through the sentinels");
        client
    }

    /// The port the sentinels name as the primary now.
    pub fn current_primary(&self) -> Option<u16> {
        let s = self.sentinels.iter().find(|s| s.child.is_some())?;
        let out = cli(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}
