//! How responses reach the socket.
//!
//! The HTTP/2 library (h2) copies a DATA frame into its write buffer only when
//! the frame is small. A larger frame is chained behind the buffer and forces
//! a write of its own, so with many calls in flight every such response costs
//! a system call and a TCP segment, where small responses share one write.
//! On a busy server those writes, and the receiving side's wake-ups, cost
//! more than building the response.
//!
//! Two adjustments let h2 batch larger responses:
//!
//! - [`crate::listener::Held`], the connection the server serves (plaintext,
//!   [`Unvectored`], or TLS), tells h2 that the socket does not do vectored
//!   writes. h2 then copies frames under 1 KiB (instead of 256 bytes) and
//!   writes its buffer with one plain `write`.
//! - [`SmallFrames`] splits each body chunk into DATA frames under that size.
//!   Splitting costs no copy (`Bytes::split_to`) and the peer sees the same
//!   gRPC message: HTTP/2 lets a message span frames.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tonic::transport::server::TcpConnectInfo;

/// Largest DATA frame a response is sent in. h2 chains (and writes on its
/// own) a frame of 1,024 bytes or more when the socket is not vectored.
const MAX_FRAME_BYTES: usize = 1_016;

/// A response body whose data chunks are at most 1,016 bytes long (`MAX_FRAME_BYTES`).
#[derive(Debug)]
pub struct SmallFrames<B> {
    inner: B,
    rest: Bytes,
}

impl<B> SmallFrames<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
        }
    }

    fn next_piece(&mut self) -> Bytes {
        let n = self.rest.len().min(MAX_FRAME_BYTES);
        self.rest.split_to(n)
    }
}

impl<B> Body for SmallFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(this.next_piece()))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(Frame::data(this.next_piece()))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// A plaintext connection as h2 sees it (see [`crate::listener::Held`]).
pub type Unvectored = crate::listener::Held<TcpStream, TcpConnectInfo>;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    /// The next frame: its data, or `None` for trailers or the end.
    async fn next_data<B>(body: &mut B) -> Option<Bytes>
    where
        B: Body<Data = Bytes, Error = Infallible> + Unpin,
    {
        let frame = body.frame().await?;
        frame.ok()?.into_data().ok()
    }

    #[tokio::test]
    async fn splits_data_into_small_frames_and_keeps_trailers() {
        let payload: Bytes = (0..2_500u32).map(|i| (i % 251) as u8).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(payload.clone())),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let inner = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        let mut body = SmallFrames::new(inner);
        let mut sizes = Vec::new();
        let mut joined = Vec::new();
        while let Some(data) = next_data(&mut body).await {
            sizes.push(data.len());
            joined.extend_from_slice(&data);
        }
        assert_eq!(sizes, vec![1_016, 1_016, 468]);
        assert_eq!(joined, payload.to_vec());
        // The trailers came after the data (they ended the loop) and
        // nothing follows them.
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn passes_trailers_through_unchanged() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        let frames = vec![Ok::<_, Infallible>(Frame::<Bytes>::trailers(
            trailers.clone(),
        ))];
        let inner = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        let mut body = SmallFrames::new(inner);
        let got = body
            .frame()
            .await
            .and_then(Result::ok)
            .and_then(|frame| frame.into_trailers().ok());
        assert_eq!(got, Some(trailers));
    }

    #[tokio::test]
    async fn ends_only_after_the_last_piece() {
        let mut body = SmallFrames::new(http_body_util::Full::new(Bytes::from(vec![7u8; 1_500])));
        assert_eq!(body.size_hint().exact(), Some(1_500));
        assert_eq!(next_data(&mut body).await.map(|d| d.len()), Some(1_016));
        // The inner body is done, but 484 bytes are still to be sent.
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(484));
        assert_eq!(next_data(&mut body).await.map(|d| d.len()), Some(484));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
