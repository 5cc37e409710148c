//! What `wallaroo run` shows while it runs: a one-line live status on a terminal, and a
//! Prometheus endpoint (`--metrics HOST:PORT`, `GET /metrics`).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use wallaroo_engine::{MetricsHandle, NodeTotals};

/// Serves the node's metrics on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, metrics: MetricsHandle) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // Read the request head (a scraper sends no body); give up on a silent client.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                    let n = conn.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                std::io::Result::Ok(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let path = std::str::from_utf8(&request)
                .ok()
                .and_then(|r| r.lines().next())
                .and_then(|line| line.strip_prefix("GET "))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("");
            let response = match path {
                "/metrics" => {
                    let body = metrics.encode();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; \
                         version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: \
                         close\r\n\r\n{body}",
                        body.len()
                    )
                }
                _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 24\r\nConnection: close\r\n\r\n\
                      metrics are at /metrics\n"
                    .to_string(),
            };
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

pub async fn bind_metrics(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics cannot listen on {addr}"))
}

/// Rewrites one status line on standard error every second, if standard error is a terminal.
/// Returns None otherwise (logs and pipes get no carriage-return noise).
pub fn spawn_status_line(metrics: MetricsHandle) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut last = (Instant::now(), metrics.totals());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = (Instant::now(), metrics.totals());
            let line = status_line(&last, &now);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            last = now;
        }
    }))
}

/// Clears the status line so the next message starts on a clean line.
pub fn clear_status_line(task: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = task {
        task.abort();
        eprint!("\r\x1b[2K");
    }
}

fn status_line(before: &(Instant, NodeTotals), now: &(Instant, NodeTotals)) -> String {
    let secs = now.0.duration_since(before.0).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let (a, b) = (&before.1, &now.1);
    let mut line = format!(
        "in {}/s  out {}/s  backlog {}  total in {} out {}",
        thousands(rate(a.received, b.received) as u64),
        thousands(rate(a.emitted, b.emitted) as u64),
        thousands(b.backlog.max(0) as u64),
        thousands(b.received),
        thousands(b.emitted),
    );
    if b.dead_lettered > 0 {
        line += &format!("  dead-lettered {}", thousands(b.dead_lettered));
    }
    if b.checkpoints > 0 {
        line += &format!("  checkpoints {}", thousands(b.checkpoints));
    }
    line
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(received: u64, emitted: u64, backlog: i64) -> NodeTotals {
        NodeTotals {
            received,
            emitted,
            dead_lettered: 0,
            dead_letters_unwritten: 0,
            instances_replaced: 0,
            instances_recycled: 0,
            backlog,
            checkpoints: 0,
            log_failed: false,
        }
    }

    #[test]
    fn the_status_line_gives_rates_over_the_interval_and_the_backlog() {
        let t0 = Instant::now();
        let line = status_line(
            &(t0, totals(1_000, 500, 0)),
            &(t0 + Duration::from_secs(2), totals(5_000, 20_500, 1_234)),
        );
        assert_eq!(
            line,
            "in 2,000/s  out 10,000/s  backlog 1,234  total in 5,000 out 20,500"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
