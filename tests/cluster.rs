//! Redis Cluster specifics beyond the shared behaviour suites (which `make test` runs against
//! a cluster too): Monitor reports every primary.

mod common;

use common::Gateway;
use common::cluster::RedisCluster;
use redis_gateway::pb;
use redis_gateway::pb::monitor_client::MonitorClient;
use redis_gateway::pb::monitor_get_health_response::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_every_primary() {
    let cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &[]).await;
    let mut monitor = MonitorClient::new(gateway.channel().await);
    let primaries: Vec<String> = (0..cluster.nodes.len())
        .filter(|&index| cluster.role(index) == "master")
        .map(|index| format!("127.0.0.1:{}", cluster.nodes[index].port))
        .collect();
    assert_eq!(primaries.len(), 3);

    let info = monitor
        .get_info(pb::MonitorGetInfoRequest {
            section: "server".into(),
        })
        .await
        .expect("GetInfo")
        .into_inner();
    let mut addresses: Vec<String> = info.nodes.iter().map(|node| node.address.clone()).collect();
    addresses.sort();
    let mut expected = primaries.clone();
    expected.sort();
    assert_eq!(addresses, expected);

    let memory = monitor
        .get_memory(pb::MonitorGetMemoryRequest {})
        .await
        .expect("GetMemory")
        .into_inner();
    assert_eq!(memory.nodes.len(), 3, "{memory:?}");
    assert_eq!(
        memory.used_memory,
        memory
            .nodes
            .iter()
            .map(|node| node.used_memory)
            .sum::<u64>()
    );

    let health = monitor
        .get_health(pb::MonitorGetHealthRequest {})
        .await
        .expect("GetHealth")
        .into_inner();
    assert_eq!(health.mode(), Mode::Cluster, "{health:?}");
}
