//! Exact 64-bit counters: INCRBY and HINCRBY past 2^53, at the limits, and matching checked
//! 64-bit addition (overflow refused).

use tonic::Code;

use crate::support::unique_key;
use crate::support::{
    assert_status, commit, direct, hincrby, incrby, put_counter_and_field, put_hash, put_string,
    run, start, string_of,
};

#[tokio::test]
async fn transaction_incrby_results_are_exact_past_2_pow_53() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let counter = unique_key("tx-big");
    let hash = unique_key("tx-big-hash");
    let big = 1i64 << 60;
    put_counter_and_field(&client, &counter, &hash, &big.to_string()).await;
    let results = commit(
        &mut kv,
        vec![],
        vec![
            incrby(&counter, 1),
            incrby(&counter, 2),
            hincrby(&hash, "f", -1),
        ],
    )
    .await;
    assert_eq!(results, vec![big + 1, big + 3, big - 1]);
    assert_eq!(
        string_of(&client, &counter).await,
        Some((big + 3).to_string())
    );
}

#[tokio::test]
async fn transaction_incrby_may_reach_the_64_bit_limits_exactly() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let high = unique_key("tx-max");
    let low = unique_key("tx-min");
    let hash = unique_key("tx-max-hash");
    put_string(&client, &high, &(i64::MAX - 3).to_string()).await;
    put_string(&client, &low, &(i64::MIN + 3).to_string()).await;
    put_hash(&client, &hash, &[("f", &(i64::MAX - 1).to_string())]).await;
    let results = commit(
        &mut kv,
        vec![],
        vec![
            incrby(&high, 2),
            incrby(&high, 1),
            incrby(&low, -3),
            hincrby(&hash, "f", 1),
            hincrby(&hash, "g", i64::MIN),
        ],
    )
    .await;
    assert_eq!(
        results,
        vec![i64::MAX - 1, i64::MAX, i64::MIN, i64::MAX, i64::MIN]
    );
    assert_eq!(string_of(&client, &high).await, Some(i64::MAX.to_string()));
    assert_eq!(string_of(&client, &low).await, Some(i64::MIN.to_string()));
}

#[tokio::test]
async fn transaction_incrby_matches_checked_64_bit_addition() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let near_max = i64::MAX - 7;
    let cases: &[(i64, i64)] = &[
        (0, 0),
        (999, 1),
        (1000, -1),
        (-1000, 1),
        (-999, -1),
        (5, -5),
        (-5, 5),
        (7, -1000),
        (-7, 1000),
        (1 << 53, 1),
        ((1 << 53) + 1, 1),
        (-(1 << 53), -3),
        (1_000_000_000_000_000_000, 8_000_000_000_000_000_000),
        (near_max, 7),
        (near_max, 8),
        (-near_max, -8),
        (-near_max, -9),
        (i64::MAX, i64::MIN),
        (i64::MIN, i64::MAX),
        (i64::MIN, 0),
        (i64::MAX, 0),
        (i64::MIN, 1),
        (i64::MAX, -1),
        (-1, i64::MIN),
        (0, i64::MIN),
        (1, i64::MAX),
    ];
    for &(start_value, delta) in cases {
        let counter = unique_key("tx-add");
        let hash = unique_key("tx-add-hash");
        put_counter_and_field(&client, &counter, &hash, &start_value.to_string()).await;
        let reply = run(
            &mut kv,
            vec![],
            vec![incrby(&counter, delta), hincrby(&hash, "f", delta)],
        )
        .await;
        match start_value.checked_add(delta) {
            Some(sum) => {
                let reply = reply.unwrap_or_else(|status| {
                    panic!("{start_value} + {delta} = {sum} was refused: {status:?}")
                });
                assert!(reply.committed);
                let results: Vec<i64> = reply.results.iter().map(|r| r.value).collect();
                assert_eq!(results, vec![sum, sum], "{start_value} + {delta}");
                assert_eq!(string_of(&client, &counter).await, Some(sum.to_string()));
            }
            None => {
                assert_status(reply, Code::FailedPrecondition, "ops[0].incrby.delta");
                assert_eq!(
                    string_of(&client, &counter).await,
                    Some(start_value.to_string())
                );
            }
        }
    }
}
