//! Private service instances for tests that break them: a redis-server and a Postgres database of
//! the test's own. The shared services are never stopped or flushed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// A redis-server of one test's own, on a free loopback port, killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// On `port`, which a test may have handed to rankd before Redis is there.
    pub async fn start_on(port: u16) -> Self {
        let mut r = Self { port, child: None };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again), empty, on the same port, and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "ping"])
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stdout).contains("PONG"))
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "private redis-server does not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: it keeps its connections and reads nothing until [`PrivateRedis::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: it runs what it was sent meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// SIGKILL: everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A database of one test's own on the shared Postgres, dropped with the guard.
pub struct TestDb {
    pub name: String,
    admin: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let base = std::env::var("RANKD_TEST_DATABASE_URL").expect(
            "RANKD_TEST_DATABASE_URL is not set: run the suite with scripts/test (it starts Postgres)",
        );
        // The admin connection goes to the same server's `postgres` database.
        let admin = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/postgres"),
            None => base.clone(),
        };
        let name = format!("rankd_t_{}", crate::helpers::prefix().trim_end_matches(':'));
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("Postgres answers");
        let sql = format!("CREATE DATABASE \"{name}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("test database created");
        Self { name, admin }
    }

    pub fn url(&self) -> String {
        match self.admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{}", self.name),
            None => unreachable!("the admin URL names a database"),
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url())
            .await
            .expect("test database answers")
    }

    /// Makes the database refuse new connections and ends the ones it has (`refuse`), or lets
    /// them in again: the store gone, as far as rankd can tell, with Postgres still up.
    pub async fn refuse_connections(&self, refuse: bool) {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin)
            .await
            .expect("Postgres answers");
        let sql = format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {}",
            self.name, !refuse
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("database altered");
        if refuse {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&self.name)
            .execute(&mut conn)
            .await
            .expect("connections ended");
        }
    }

    /// Drops the database and creates it again, empty: the store lost, and a new one in its place.
    pub async fn recreate(&self) {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin)
            .await
            .expect("Postgres answers");
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            format!("CREATE DATABASE \"{}\"", self.name),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("database dropped and created");
        }
    }
}

impl Drop for TestDb {
    /// Drops the database, however the test ended.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        crate::cleanup::blocking(
            format!("dropping database {name}"),
            Duration::from_secs(30),
            move || async move {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .map_err(|e| format!("Postgres answers: {e}"))?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        );
    }
}

/// A Postgres server of one test's own (initdb into a temporary directory, pg_ctl on a free port),
/// stopped and removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    /// The addresses it listens on (`listen_addresses`).
    listen: String,
}

impl PrivatePostgres {
    fn as_postgres(&self, program: &str) -> Command {
        // Postgres refuses to run as root: run its tools as the postgres user when we are root.
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
        c
    }

    pub async fn start() -> Self {
        Self::start_with("127.0.0.1", |_| {}).await
    }

    /// Listening on `listen` (loopback addresses, comma-separated), with `setup` run on the data
    /// directory after initdb and before the first start (what it writes there becomes the
    /// postgres user's).
    pub async fn start_with(listen: &str, setup: impl FnOnce(&std::path::Path)) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries are installed")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb is installed");
        let dir = std::env::temp_dir().join(format!(
            "rankd-pg-{}",
            crate::helpers::prefix().trim_end_matches(':')
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of the private data directory");
        let pg = Self {
            port: free_port(),
            dir,
            bin,
            listen: listen.to_owned(),
        };
        let out = pg
            .as_postgres("initdb")
            .args(["-D"])
            .arg(pg.dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = pg.dir.join("data");
        setup(&data);
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success(), "chown of what setup wrote");
        pg.resume().await;
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts (or starts again) the server and waits until it accepts connections.
    pub async fn resume(&self) {
        let out = self
            .as_postgres("pg_ctl")
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args([
                "-o",
                &format!(
                    "-p {} -k {} -c listen_addresses={} -c fsync=off",
                    self.port,
                    self.dir.display(),
                    self.listen
                ),
            ])
            .args(["-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once.
    pub fn stop(&self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
