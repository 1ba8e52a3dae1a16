//! The gRPC face: `AggregatedDiscoveryService` (envoy-types' generated
//! server trait) handing each stream to its protocol's task.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::delta::Delta;
use crate::node::Shared;
use crate::sotw::Sotw;
use crate::stream;

/// One `serve` call's service: the shared state and that call's stop signal.
pub(crate) struct Ads {
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(stream::spawn::<Sotw>(
            Arc::clone(&self.shared),
            self.stop.clone(),
            request.into_inner(),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(stream::spawn::<Delta>(
            Arc::clone(&self.shared),
            self.stop.clone(),
            request.into_inner(),
        )))
    }
}
