//! Server reflection v1 (what current gRPC tools speak; grpcurl 1.8's v1alpha is covered in
//! grpcurl.rs): it lists exactly the served services and describes their protos.

mod common;

use common::{Gateway, shared_redis};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn ask(gateway: &Gateway, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(gateway.channel().await);
    let outbound = tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut replies = client
        .server_reflection_info(outbound)
        .await
        .expect("reflection answers")
        .into_inner();
    replies
        .message()
        .await
        .expect("a reply")
        .expect("one message")
        .message_response
        .expect("a response")
}

#[tokio::test]
async fn reflection_v1_lists_served_services_and_describes_them() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let MessageResponse::ListServicesResponse(list) =
        ask(&gateway, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.contains(&"redisgateway.v1.KeyValue".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"redisgateway.v1.Lock".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"redisgateway.v1.Monitor".to_owned()),
        "{names:?}"
    );

    let MessageResponse::FileDescriptorResponse(files) = ask(
        &gateway,
        MessageRequest::FileContainingSymbol("redisgateway.v1.KeyValue".into()),
    )
    .await
    else {
        panic!("not a file descriptor");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
