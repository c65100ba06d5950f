//! Scan: page sizes, glob patterns and type filters.

use std::collections::HashSet;

use fred::prelude::*;

use crate::common::unique_key;
use crate::support::{Kv, create_hash_and_list, direct, scan_request, set, start, start_with};

/// Every page of a Scan, failing on an error status.
async fn scan_pages(
    kv: &mut Kv,
    pattern: &str,
    page_size: u32,
    key_type: &str,
) -> Vec<Vec<String>> {
    let request = scan_request(pattern, page_size, key_type);
    let mut stream = kv.scan(request).await.unwrap().into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        pages.push(page.keys);
    }
    pages
}

/// The keys of every page of a Scan with the default page size.
async fn scan_set(kv: &mut Kv, pattern: &str, key_type: &str) -> HashSet<String> {
    scan_pages(kv, pattern, 0, key_type)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn scan_streams_pages_no_larger_than_page_size_and_finds_every_key() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-pages");
    let expected: HashSet<String> = (0..25).map(|i| format!("{prefix}:{i}")).collect();
    for key in &expected {
        set(&mut kv, key, "v").await;
    }
    let pattern = format!("{prefix}:*");
    for page_size in [1, 4, 7, 25, 100] {
        let pages = scan_pages(&mut kv, &pattern, page_size, "").await;
        for page in &pages {
            assert!(
                page.len() <= page_size as usize,
                "a page of {} keys with page_size {page_size}",
                page.len()
            );
        }
        let total: usize = pages.iter().map(Vec::len).sum();
        assert!(
            total >= expected.len(),
            "page_size {page_size}: only {total} keys"
        );
        let found: HashSet<String> = pages.into_iter().flatten().collect();
        assert_eq!(found, expected, "page_size {page_size}");
    }
    // page_size 0 means 100.
    let pages = scan_pages(&mut kv, &pattern, 0, "").await;
    assert!(pages.iter().all(|page| page.len() <= 100));
    let found: HashSet<String> = pages.into_iter().flatten().collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn scan_pattern_confines_results() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-pattern");
    let a: HashSet<String> = (0..5).map(|i| format!("{prefix}:a:{i}")).collect();
    let b: HashSet<String> = (0..3).map(|i| format!("{prefix}:b:{i}")).collect();
    let star = format!("{prefix}:lit*x");
    let not_star = format!("{prefix}:litYx");
    for key in a.iter().chain(&b).chain([&star, &not_star]) {
        set(&mut kv, key, "v").await;
    }
    assert_eq!(scan_set(&mut kv, &format!("{prefix}:a:*"), "").await, a);
    assert_eq!(scan_set(&mut kv, &format!("{prefix}:b:*"), "").await, b);
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:?:1"), "").await,
        HashSet::from([format!("{prefix}:a:1"), format!("{prefix}:b:1")])
    );
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:[b]:[0-1]"), "").await,
        HashSet::from([format!("{prefix}:b:0"), format!("{prefix}:b:1")])
    );
    // `\` escapes a glob character.
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:lit\\*x"), "").await,
        HashSet::from([star.clone()])
    );
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:lit*x"), "").await,
        HashSet::from([star, not_star])
    );
    assert!(
        scan_set(&mut kv, &format!("{prefix}:c:*"), "")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn scan_type_filter_returns_only_keys_of_that_type() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-type");
    let string = format!("{prefix}:string");
    let hash = format!("{prefix}:hash");
    let list = format!("{prefix}:list");
    set(&mut kv, &string, "v").await;
    create_hash_and_list(&hash, &list).await;
    let pattern = format!("{prefix}:*");

    assert_eq!(
        scan_set(&mut kv, &pattern, "string").await,
        HashSet::from([string.clone()])
    );
    assert_eq!(
        scan_set(&mut kv, &pattern, "hash").await,
        HashSet::from([hash.clone()])
    );
    assert_eq!(
        scan_set(&mut kv, &pattern, "list").await,
        HashSet::from([list.clone()])
    );
    assert!(scan_set(&mut kv, &pattern, "zset").await.is_empty());
    // An empty pattern means every key.
    let every_hash = scan_set(&mut kv, "", "hash").await;
    assert!(
        every_hash.contains(&hash),
        "{hash} missing from an empty-pattern scan"
    );
    assert!(!every_hash.contains(&string));
    assert_eq!(
        scan_set(&mut kv, &pattern, "").await,
        HashSet::from([string, hash, list])
    );
}

#[tokio::test]
async fn scan_default_pages_respect_a_lower_batch_limit() {
    let (_gateway, mut kv) = start_with(&["--max-batch-items", "50"]).await;
    // One slot, so that one MSET writes them on a cluster too.
    let prefix = crate::common::slot_tag("scan-small");
    let keys: Vec<(String, &str)> = (0..120).map(|i| (format!("{prefix}:{i}"), "v")).collect();
    let _: () = direct().await.mset(keys).await.unwrap();
    let pages = scan_pages(&mut kv, &format!("{prefix}:*"), 0, "").await;
    assert!(
        pages.iter().all(|page| page.len() <= 50),
        "{:?}",
        pages.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), 120);
}

#[tokio::test]
async fn scan_skips_keys_that_are_not_utf8() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-binary");
    let client = direct().await;
    let mut binary_key = format!("{prefix}:").into_bytes();
    binary_key.push(0xff);
    let _: () = client
        .set(
            Key::from(bytes::Bytes::from(binary_key)),
            "v",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    set(&mut kv, &format!("{prefix}:text"), "v").await;
    let found = scan_set(&mut kv, &format!("{prefix}:*"), "").await;
    assert_eq!(found, HashSet::from([format!("{prefix}:text")]));
}
