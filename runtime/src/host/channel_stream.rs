//! A guest `stream<T>` fed from a tokio channel: the host side of a result
//! that arrives a piece at a time (PostgreSQL rows). The guest reads as the
//! channel fills; the producer task waits when the guest reads slowly, so at
//! most the channel's capacity is held in the host.

use std::pin::Pin;
use std::task::{Context, Poll};
use wasmtime::StoreContextMut;
use wasmtime::component::{Destination, StreamProducer, StreamResult};

pub struct ChannelStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<D, T: Send + Sync + 'static> StreamProducer<D> for ChannelStream<T> {
    type Item = T;
    type Buffer = Option<T>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, T, Option<T>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        // A zero-length read asks only whether the stream is open; say yes
        // without taking an item the guest might never read.
        if destination.remaining(store) == Some(0) {
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        match self.get_mut().0.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                destination.set_buffer(Some(item));
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(None) => Poll::Ready(Ok(StreamResult::Dropped)),
            // Nothing was taken, so a cancelled read loses nothing.
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}
