//! How the library reports transfers to whoever drives it (the CLI draws indicatif bars; a
//! GUI could draw its own; the default reports nothing).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

/// Receives transfer progress. Implementations decide what is worth showing.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes is starting.
    fn transfer(&self, label: &str, total: u64) -> Box<dyn Transfer>;
}

/// One running transfer.
pub trait Transfer: Send + Sync {
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn transfer(&self, _label: &str, _total: u64) -> Box<dyn Transfer> {
        Box::new(NoTransfer)
    }
}

pub struct NoTransfer;

impl Transfer for NoTransfer {
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Chunk size of uploads: small enough for a smooth bar, large enough to be cheap.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// A request body that hands out `data` in chunks and reports each one as sent.
pub(crate) struct ProgressBody {
    data: Bytes,
    transfer: Box<dyn Transfer>,
}

impl ProgressBody {
    pub(crate) fn new(data: Bytes, transfer: Box<dyn Transfer>) -> Self {
        ProgressBody { data, transfer }
    }
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            this.transfer.finish();
            return Poll::Ready(None);
        }
        let n = this.data.len().min(UPLOAD_CHUNK);
        let chunk = this.data.split_to(n);
        this.transfer.advance(n as u64);
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}
