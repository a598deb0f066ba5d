//! The sidecar's own HTTP/1.1 client, for the common exchange: a request
//! whose body is already whole (none, or one the proxy buffered for retries),
//! without upgrade. Everything else (streamed bodies, upgrades, `CONNECT`,
//! HTTP/2) stays on hyper's client ([`crate::pool`] chooses).
//!
//! Why: hyper's client connection is a task of its own, with a dispatcher
//! and a channel to each request's task and body; in the 2026-12-07 profile
//! that machinery was 14.3 k of the server sidecar's 46.4 k instructions per
//! request. Here the request's own task writes head and body in one write and
//! parses the response head; the body is read by whoever polls it, and the
//! connection goes back to its pool the moment the last byte is read.

mod body;
mod conn;
mod encode;
mod head;
#[cfg(test)]
mod tests;

use http::Response;
use tokio::io::AsyncWriteExt;

pub use body::ResponseBody;
pub use conn::{Conn, Error, Reuse};
pub use encode::{outgoing, Outgoing};

impl Conn {
    /// Sends `req` and reads the response head. The response's body reads the
    /// rest from this connection and hands it to `reuse` when done.
    pub async fn send<R: Reuse>(
        mut self,
        mut req: Outgoing,
        reuse: R,
    ) -> Result<Response<ResponseBody<R>>, Error> {
        if let Some((at, value)) = &req.peer {
            let how = self.peer.send(value);
            crate::h1peer::insert(&mut req.bytes, *at, value, how);
        }
        self.io.write_all(&req.bytes).await?;
        self.io.flush().await?;
        let head = loop {
            if let Some(h) = head::take(&mut self.buf, req.head, &mut self.repeats, &mut self.peer)?
            {
                break h;
            }
            self.buf.reserve(8 * 1024);
            if tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.buf).await? == 0 {
                return Err(Error::Closed);
            }
        };
        let (parts, ()) = head.response.into_parts();
        let body = ResponseBody::new(self, head.framing, head.keep_alive, reuse);
        Ok(Response::from_parts(parts, body))
    }
}
