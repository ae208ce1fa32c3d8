//! TLS end to end: rankd on a redis-server whose only port is its TLS port, on a Redis Cluster whose
//! clients and bus speak only TLS, and on a Postgres that lets in TLS connections alone, each with
//! certificates this file makes; and the refusals of a certificate for another host or from a
//! certificate authority rankd does not trust.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::config::Config;
use rankd::engine::SystemClock;
use rankd::store::postgres::PgStore;
use rankd::Error;
use serde_json::json;

use crate::cleanup::ScratchDir;
use crate::private::PrivatePostgres;
use crate::server::{free_port, TestApp};

/// A certificate authority, and a server certificate it signed for `localhost` and 127.0.0.1 (not
/// 127.0.0.2: connecting there is connecting to a host the certificate does not name), as PEM files
/// in a scratch directory.
struct Pki {
    dir: ScratchDir,
}

impl Pki {
    fn new() -> Self {
        let dir = ScratchDir::new("tls");
        std::fs::create_dir_all(dir.path()).unwrap();
        let pki = Self { dir };
        let (ca, ca_key) = authority("rankd test CA");
        std::fs::write(pki.ca(), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(pki.cert(), cert.pem()).unwrap();
        std::fs::write(pki.key(), key.serialize_pem()).unwrap();
        // Another authority, which signed nothing the servers present.
        let (other, other_key) = authority("another CA");
        std::fs::write(pki.other_ca(), other.self_signed(&other_key).unwrap().pem()).unwrap();
        pki
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }
    fn other_ca(&self) -> PathBuf {
        self.file("other-ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.file("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.file("server.key")
    }
}

/// The parameters and key of a certificate authority, which signs its own certificate.
fn authority(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    (params, rcgen::KeyPair::generate().unwrap())
}

/// A redis-server whose only listener is its TLS port (`--port 0`), killed when dropped.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    /// On 127.0.0.1 and 127.0.0.2, with `extra` arguments (cluster mode).
    async fn start(pki: &Pki, extra: &[String]) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "127.0.0.2"])
            .arg("--tls-cert-file")
            .arg(pki.cert())
            .arg("--tls-key-file")
            .arg(pki.key())
            .arg("--tls-ca-cert-file")
            .arg(pki.ca())
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let r = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r.cli(pki, &["ping"]).contains("PONG") {
            assert!(
                Instant::now() < deadline,
                "TLS redis-server does not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r
    }

    /// redis-cli over TLS, trusting the test CA: its standard output.
    fn cli(&self, pki: &Pki, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--tls",
                "--cacert",
            ])
            .arg(pki.ca())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// redis-cli in plain text on the same port: what a client without TLS gets.
    fn plain_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 3-primary Redis Cluster over TLS: clients and the cluster bus alike.
struct TlsCluster {
    nodes: Vec<TlsRedis>,
    _dir: ScratchDir,
}

impl TlsCluster {
    async fn start(pki: &Pki) -> Self {
        let dir = ScratchDir::new("tls-cluster");
        std::fs::create_dir_all(dir.path()).unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            // The bus port named, not derived (port + 10000 may pass 65535 for a free port).
            let extra = [
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--tls-cluster".to_owned(),
                "yes".to_owned(),
                "--cluster-port".to_owned(),
                free_port().to_string(),
                "--cluster-config-file".to_owned(),
                dir.path()
                    .join(format!("nodes-{i}.conf"))
                    .display()
                    .to_string(),
            ];
            nodes.push(TlsRedis::start(pki, &extra).await);
        }
        // 16384 slots in three ranges, then every node meets the first.
        for (node, (lo, hi)) in nodes.iter().zip([(0, 5460), (5461, 10922), (10923, 16383)]) {
            let out = node.cli(
                pki,
                &["cluster", "addslotsrange", &lo.to_string(), &hi.to_string()],
            );
            assert!(out.contains("OK"), "ADDSLOTSRANGE: {out}");
        }
        let bus = |n: &TlsRedis| {
            n.cli(pki, &["config", "get", "cluster-port"])
                .lines()
                .nth(1)
                .unwrap()
                .to_owned()
        };
        for node in &nodes[1..] {
            let (port, bus) = (node.port.to_string(), bus(node));
            let out = nodes[0].cli(pki, &["cluster", "meet", "127.0.0.1", &port, &bus]);
            assert!(out.contains("OK"), "MEET: {out}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes.iter().all(|n| {
            n.cli(pki, &["cluster", "info"])
                .contains("cluster_state:ok")
        }) {
            assert!(Instant::now() < deadline, "the TLS cluster did not form");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { nodes, _dir: dir }
    }

    fn url(&self) -> String {
        format!(
            "rediss-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port, self.nodes[2].port
        )
    }
}

/// A server on `redis_url` trusting `ca` for it.
async fn app_on(redis_url: String, ca: PathBuf) -> TestApp {
    TestApp::spawn_with(|c| {
        c.redis_url = Some(redis_url);
        c.redis_ca_file = Some(ca);
    })
    .await
}

/// Defines `board`, submits two scores and reads the top: the whole path through Redis.
async fn scores_round_trip(app: &TestApp, board: &str) {
    app.put_board(board, json!({"order": "desc"})).await;
    app.submit(board, "alice", 10.0).await;
    app.submit(board, "bob", 20.0).await;
    let top: serde_json::Value = app
        .get(&format!("/v1/boards/{board}/top?limit=2"))
        .await
        .json()
        .await
        .unwrap();
    let members: Vec<&str> = top["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("entries in {top}"))
        .iter()
        .map(|e| e["member"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["bob", "alice"], "{top}");
}

/// The engine rankd serve would build for `config`, expected to fail for good: the setting named
/// and the message.
async fn refused(config: &Config) -> (String, String) {
    let started = Instant::now();
    match rankd::serve::build_engine(config, Arc::new(SystemClock)).await {
        Err(Error::Invalid(i)) => {
            // Refused at once, not after waiting for a server that will never do.
            assert!(started.elapsed() < Duration::from_secs(5), "{i}");
            (i.field, i.message)
        }
        Err(e) => panic!("expected an invalid setting, got {e}"),
        Ok(_) => panic!("the engine started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_serves_scores_from_a_redis_whose_only_port_speaks_tls() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &[]).await;
    // The port speaks nothing but TLS: a plain client gets no answer.
    assert!(!redis.plain_cli(&["ping"]).contains("PONG"));
    let app = app_on(format!("rediss://127.0.0.1:{}", redis.port), pki.ca()).await;
    scores_round_trip(&app, "tls").await;
    // And the scores are on that server.
    let keys = redis.cli(&pki, &["--scan", "--pattern", "*{tls}*"]);
    assert!(keys.lines().count() > 0, "no key of board tls: {keys:?}");
    // `rankd admin` takes the same URL and CA file.
    let admin = |ca: PathBuf| {
        Command::new(env!("CARGO_BIN_EXE_rankd"))
            .args(["admin", "clear-caches", "--dry-run"])
            .args(["--redis-url", &format!("rediss://127.0.0.1:{}", redis.port)])
            .arg("--redis-ca-file")
            .arg(ca)
            .args(["--key-prefix", &app.config.key_prefix])
            .env_remove("RANKD_CONFIG")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    let ok = admin(pki.ca());
    assert!(ok.status.success(), "{ok:?}");
    let refused = admin(pki.other_ca());
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("redis_url: TLS: the server's certificate was refused"),
        "{stderr}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_serves_scores_from_every_primary_over_tls() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki).await;
    let app = app_on(cluster.url(), pki.ca()).await;
    let boards = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for board in boards {
        scores_round_trip(&app, board).await;
    }
    // The boards' hash tags spread them over the primaries: more than one node took keys, each
    // reached over TLS.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&pki, &["dbsize"]).trim().parse::<u64>().unwrap() > 0)
        .count();
    assert!(holding >= 2, "keys on {holding} node(s) only");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_for_another_host_or_from_an_untrusted_ca_is_refused_by_name() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &[]).await;
    let config = |url: String, ca: Option<PathBuf>| Config {
        redis_url: Some(url),
        redis_ca_file: ca,
        ..Config::default()
    };
    let (field, m) = refused(&config(
        format!("rediss://127.0.0.2:{}", redis.port),
        Some(pki.ca()),
    ))
    .await;
    assert_eq!(field, "redis_url");
    assert!(
        m.contains("certificate was refused: it is not valid for the host name"),
        "{m}"
    );
    for ca in [Some(pki.other_ca()), None] {
        let (field, m) = refused(&config(
            format!("rediss://127.0.0.1:{}", redis.port),
            ca.clone(),
        ))
        .await;
        assert_eq!(field, "redis_url");
        assert!(
            m.contains("certificate was refused: it is signed by no certificate authority"),
            "{ca:?}: {m}"
        );
    }
    // A CA file that is no certificate is named as such before anything connects.
    let (field, m) = refused(&config(
        format!("rediss://127.0.0.1:{}", redis.port),
        Some(pki.key()),
    ))
    .await;
    assert_eq!(field, "redis_ca_file");
    assert!(m.contains("holds no certificate"), "{m}");
}

/// A private Postgres with TLS on, that lets in TLS connections over TCP and nothing else.
async fn tls_postgres(pki: &Pki) -> PrivatePostgres {
    PrivatePostgres::start_with("127.0.0.1,127.0.0.2", |data: &Path| {
        std::fs::copy(pki.cert(), data.join("server.crt")).unwrap();
        std::fs::copy(pki.key(), data.join("server.key")).unwrap();
        // Postgres refuses a key others may read.
        let status = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()
            .unwrap();
        assert!(status.success());
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.0/8 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_with_sslrootcert_stores_every_write_over_tls() {
    let pki = Pki::new();
    let pg = tls_postgres(&pki).await;
    // Without TLS the server lets no one in: every connection that works below is TLS.
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    let e = <sqlx::PgConnection as sqlx::Connection>::connect(&plain)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no encryption"), "{e}");

    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        pki.ca().display()
    );
    let app = TestApp::spawn_with(|c| c.database_url = Some(url.clone())).await;
    // Sync durability: answered once the store committed it.
    scores_round_trip(&app, "stored").await;
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM rankd_ops WHERE board = 'stored'")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(
        stored >= 3,
        "the definition and two scores stored: {stored}"
    );
    // Every connection of rankd's (all but this one) is TLS, under a verified certificate.
    let (tls, all): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s
           JOIN pg_stat_activity a USING (pid)
          WHERE a.backend_type = 'client backend' AND s.pid <> pg_backend_pid()",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(all > 0 && tls == all, "{tls} of {all} connections are TLS");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_refuses_another_host_name_and_an_untrusted_ca_by_name() {
    let pki = Pki::new();
    let pg = tls_postgres(&pki).await;
    let url = |host: &str, mode: &str, ca: Option<&Path>| {
        let ca = ca.map_or(String::new(), |p| format!("&sslrootcert={}", p.display()));
        format!(
            "postgres://postgres@{host}:{}/postgres?sslmode={mode}{ca}",
            pg.port
        )
    };
    let refused = |url: String| async move {
        match PgStore::connect(&url).await {
            Err(Error::Invalid(i)) => (i.field, i.message),
            Err(e) => panic!("{url}: expected an invalid setting, got {e}"),
            Ok(_) => panic!("{url}: connected"),
        }
    };
    let (field, m) = refused(url("127.0.0.2", "verify-full", Some(&pki.ca()))).await;
    assert_eq!(field, "database_url");
    assert!(
        m.contains("certificate was refused: it is not valid for the host name"),
        "{m}"
    );
    for (host, ca) in [("localhost", Some(pki.other_ca())), ("localhost", None)] {
        let (field, m) = refused(url(host, "verify-full", ca.as_deref())).await;
        assert_eq!(field, "database_url");
        assert!(
            m.contains("certificate was refused: it is signed by no certificate authority"),
            "{ca:?}: {m}"
        );
    }
    // A server with no TLS at all, when sslmode asks for it.
    let plain = PrivatePostgres::start().await;
    let (field, m) = refused(format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        plain.port
    ))
    .await;
    assert_eq!(field, "database_url");
    assert!(m.contains("TLS: server does not support TLS"), "{m}");
    // verify-ca checks the authority and not the name; require checks neither, and still encrypts.
    for url in [
        url("127.0.0.2", "verify-ca", Some(&pki.ca())),
        url("127.0.0.2", "require", None),
    ] {
        let store = PgStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(ssl, "{url}");
    }
}
