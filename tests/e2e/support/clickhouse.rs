//! A real clickhouse-server (Debian's 18.16, installed by
//! scripts/install-clickhouse.sh) started for one test on free ports in a
//! temporary directory, and a minimal HTTP client for its queries. A test
//! may SIGKILL it and start it again on the same ports and data
//! ([`ClickHouse::kill`], [`ClickHouse::restart`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::common::{free_port, poll, require_tool, wait_until};

pub struct ClickHouse {
    pub http_port: u16,
    /// The native and interserver ports, kept across a restart.
    other_ports: (u16, u16),
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        let mut server = ClickHouse {
            http_port: free_port(),
            other_ports: (free_port(), free_port()),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// Starts the server (again) on its ports and data, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "clickhouse-server runs already");
        let binary = require_tool(
            "clickhouse-server",
            &[
                PathBuf::from("/usr/bin/clickhouse-server"),
                PathBuf::from("/usr/sbin/clickhouse-server"),
            ],
            "bash scripts/install-clickhouse.sh",
        );
        let (http_port, path) = (self.http_port, self.dir.path().display());
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
            .arg(format!("--tcp_port={}", self.other_ports.0))
            .arg(format!("--interserver_http_port={}", self.other_ports.1))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start clickhouse-server");
        self.child = Some(child);
        poll(
            || format!("clickhouse-server to answer on port {http_port}"),
            || (self.try_query("SELECT 1").map(|r| r.trim() == "1") == Ok(true)).then_some(()),
        );
    }

    /// SIGKILL: the server dies at once; returns once its HTTP port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let addr = format!("127.0.0.1:{}", self.http_port);
        wait_until("clickhouse-server to stop", || TcpStream::connect(&addr).is_err());
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
