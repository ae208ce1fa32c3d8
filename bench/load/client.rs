//! The clients: Redis through fred, and a minimal HTTP/1.1 keep-alive client with the requests it sends.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use fred::prelude::{Builder, Client, ClientLike, Config as FredConfig};
use fred::types::{ClusterHash, CustomCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ADMIN_KEY;

pub(crate) fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

pub(crate) fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub(crate) async fn redis_client(url: &str) -> Result<Client> {
    let config = FredConfig::from_url(url).with_context(|| format!("redis url {url}"))?;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(60))
        .build()?;
    client.init().await.context("connecting to Redis")?;
    Ok(client)
}

/// One keep-alive connection, one request in flight.
pub(crate) struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The last answer's `X-Rankd-Cache` (hit, miss or bypass), when it had one.
    pub(crate) cache: Option<&'static str>,
}

impl HttpConn {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            cache: None,
        })
    }

    /// Sends a request; answers the status and the body.
    pub(crate) async fn send(&mut self, req: &[u8]) -> Result<(u16, &[u8]), String> {
        self.stream.write_all(req).await.map_err(e2s)?;
        self.buf.clear();
        loop {
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.buf).await.map_err(e2s)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let head = match resp.parse(&self.buf).map_err(e2s)? {
                httparse::Status::Partial => continue,
                httparse::Status::Complete(n) => n,
            };
            let status = resp.code.unwrap_or(0);
            let mut len = None;
            self.cache = None;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok());
                } else if h.name.eq_ignore_ascii_case("x-rankd-cache") {
                    self.cache = match h.value {
                        b"hit" => Some("hit"),
                        b"miss" => Some("miss"),
                        b"bypass" => Some("bypass"),
                        _ => Some("other"),
                    };
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err("chunked responses are not supported by this client".into());
                }
            }
            let len = len.ok_or("a response without content-length")?;
            while self.buf.len() < head + len {
                self.buf.reserve(head + len - self.buf.len());
                let n = self.stream.read_buf(&mut self.buf).await.map_err(e2s)?;
                if n == 0 {
                    return Err("the server closed the connection mid-body".into());
                }
            }
            if self.buf.len() != head + len {
                return Err("bytes after the response".into());
            }
            return Ok((status, &self.buf[head..]));
        }
    }
}

pub(crate) fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {ADMIN_KEY}\r\n\r\n")
        .into_bytes()
}

pub(crate) fn post_req(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}
