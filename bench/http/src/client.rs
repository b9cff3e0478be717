//! A minimal HTTP/1.1 client: sequential requests on one keep-alive connection, for the
//! callgrind runs (it runs outside valgrind; only the server is measured).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `count` GET requests, cycling through `keys` in `x-api-key`, one at a time on one
/// connection; every response must be `200`.
pub(crate) fn drive(
    port: u16,
    keys: &[String],
    count: usize,
    deadline: Instant,
) -> Result<(), String> {
    if keys.is_empty() {
        return Err("no keys".into());
    }
    let requests: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| {
            format!(
                "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}: {key}\r\n\r\n",
                keygate_loadbench::server::PATH,
                keygate_loadbench::server::KEY_HEADER,
            )
            .into_bytes()
        })
        .collect();
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut buffer = Vec::with_capacity(4096);
    for (i, request) in requests.iter().cycle().take(count).enumerate() {
        if i % 256 == 0 && Instant::now() > deadline {
            return Err(format!(
                "time budget exhausted after {i} of {count} requests"
            ));
        }
        stream
            .write_all(request)
            .map_err(|e| format!("request {i}: {e}"))?;
        let status =
            read_response(&mut stream, &mut buffer).map_err(|e| format!("request {i}: {e}"))?;
        if status != 200 {
            return Err(format!("request {i}: status {status}"));
        }
    }
    Ok(())
}

/// Reads one response (headers and a `content-length` body) and returns its status.
fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16, String> {
    let mut chunk = [0_u8; 4096];
    loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).map_err(|e| e.to_string())?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| format!("bad status line in {head:?}"))?;
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .map(|(_, value)| value.trim().parse::<usize>())
                .transpose()
                .map_err(|e| e.to_string())?
                .ok_or("response without content-length")?;
            let total = end + 4 + length;
            while buffer.len() < total {
                fill(stream, buffer, &mut chunk)?;
            }
            buffer.drain(..total);
            return Ok(status);
        }
        fill(stream, buffer, &mut chunk)?;
    }
}

fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>, chunk: &mut [u8]) -> Result<(), String> {
    match stream.read(chunk) {
        Ok(0) => Err("connection closed".into()),
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
