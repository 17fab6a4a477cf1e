//! A real clickhouse-server (Debian's 18.16, installed by
//! scripts/install-clickhouse.sh) started for one test on free ports in a
//! temporary directory, and a minimal HTTP client for its queries.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ClickHouse {
    pub http_port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ClickHouse {
    /// `None` when clickhouse-server is not installed, except under
    /// `CI=true`, where a missing server fails the test.
    pub fn start() -> Option<ClickHouse> {
        let binary = ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(binary) = binary else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "clickhouse-server is not installed: run bash scripts/install-clickhouse.sh"
            );
            eprintln!("skipped: clickhouse-server is not installed (bash scripts/install-clickhouse.sh)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let path = dir.path().display();
        let child = Command::new(binary)
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--path={path}/"))
            .arg(format!("--tmp_path={path}/tmp/"))
            .arg(format!("--user_files_path={path}/user_files/"))
            .arg(format!("--format_schema_path={path}/format_schemas/"))
            .arg(format!("--logger.log={path}/server.log"))
            .arg(format!("--logger.errorlog={path}/error.log"))
            .arg(format!("--http_port={http_port}"))
            .arg(format!("--tcp_port={}", free_port()))
            .arg(format!("--interserver_http_port={}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start clickhouse-server");
        let server = ClickHouse {
            http_port,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        while server.try_query("SELECT 1").map(|r| r.trim() == "1") != Ok(true) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "clickhouse-server did not answer on port {http_port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port)).map_err(|e| e.to_string())?;
        let request = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{head}\n{body}"));
        }
        Ok(body.to_string())
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
