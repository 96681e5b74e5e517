//! The stream of container events from CRI GetContainerEvents.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use k8s_cri::v1 as cri;

use crate::error::{CriError, Result};

/// Container lifecycle events as the runtime reports them; ends when the runtime closes it.
pub struct ContainerEvents {
    endpoint: String,
    inner: tonic::Streaming<cri::ContainerEventResponse>,
}

impl ContainerEvents {
    pub(crate) fn new(
        endpoint: String,
        inner: tonic::Streaming<cri::ContainerEventResponse>,
    ) -> Self {
        ContainerEvents { endpoint, inner }
    }
}

impl Stream for ContainerEvents {
    type Item = Result<cri::ContainerEventResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(ev))) => Poll::Ready(Some(Ok(ev))),
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(CriError::from_status(
                &this.endpoint,
                "GetContainerEvents",
                status,
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
