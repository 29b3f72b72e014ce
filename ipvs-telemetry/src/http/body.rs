//! Response bodies: whole (small answers) or streamed from an encoder thread.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub(super) enum Body {
    /// All of it at once.
    Whole(Option<Bytes>),
    /// Chunks as an encoder produces them; the body ends when the encoder drops its sender.
    Stream(mpsc::Receiver<Bytes>),
    /// Chunks held elsewhere too (a shared gzip body: its segments are the cache's), from
    /// `next`, `left` bytes in all.
    Chunks {
        chunks: Arc<[Bytes]>,
        next: usize,
        left: u64,
    },
}

impl Body {
    /// A whole body.
    pub(super) fn whole(b: impl Into<Bytes>) -> Body {
        Body::Whole(Some(b.into()))
    }

    /// A body of `chunks`, in order.
    pub(super) fn chunks(chunks: Arc<[Bytes]>) -> Body {
        let left = chunks.iter().map(|c| c.len() as u64).sum();
        Body::Chunks {
            chunks,
            next: 0,
            left,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
            Body::Chunks { chunks, next, left } => {
                let b = chunks.get(*next).cloned();
                if let Some(b) = &b {
                    *next += 1;
                    *left -= b.len() as u64;
                }
                Poll::Ready(b.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(b) => b.is_none(),
            Body::Stream(_) => false,
            Body::Chunks { chunks, next, .. } => *next >= chunks.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Whole(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
            Body::Chunks { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body of shared chunks sends each chunk in order, says its exact length throughout,
    /// and shares the chunks' memory rather than copying it.
    #[tokio::test]
    async fn chunks_are_sent_in_order_and_shared() {
        let parts: Arc<[Bytes]> = Arc::from(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from(b"cde".to_vec()),
        ]);
        let mut body = Body::chunks(parts.clone());
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(5));
        let mut got = Vec::new();
        while let Some(f) = body.frame().await {
            let data = f.unwrap().into_data().unwrap();
            got.push(data);
            let left = 5 - got.iter().map(|b| b.len() as u64).sum::<u64>();
            assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(left));
        }
        assert!(hyper::body::Body::is_end_stream(&body));
        assert_eq!(got.concat(), b"abcde");
        assert_eq!(got[2].as_ptr(), parts[2].as_ptr());
    }
}
