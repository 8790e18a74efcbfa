//! The files the Functions host reads agree with the code.

use cas_sentinel::testing::functions::protocol::{QUEUE_BINDING, TIMER_BINDING};
use cas_sentinel::testing::functions::{INGEST_FUNCTION, POLL_FUNCTION};
use cas_sentinel::testing::local::host::{BATCH_SIZE, MAX_DEQUEUE_COUNT};
use serde_json::Value;

fn read(path: &str) -> Value {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}")))
        .unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn host_json_starts_this_binary_as_a_custom_handler_with_the_queue_settings_we_rely_on() {
    let host = read("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        env!("CARGO_PKG_NAME")
    );
    assert_eq!(
        host["customHandler"]["description"]["arguments"][0],
        "serve"
    );
    let q = &host["extensions"]["queues"];
    assert_eq!(
        q["messageEncoding"], "base64",
        "the poll side base64-encodes messages"
    );
    assert_eq!(q["maxDequeueCount"], MAX_DEQUEUE_COUNT);
    assert_eq!(q["batchSize"], BATCH_SIZE as u64);
}

#[test]
fn function_definitions_use_the_binding_names_the_handler_reads() {
    let poll = read(&format!(
        "function-definitions/{POLL_FUNCTION}/function.json"
    ));
    let t = &poll["bindings"][0];
    assert_eq!(
        (t["type"].as_str(), t["name"].as_str()),
        (Some("timerTrigger"), Some(TIMER_BINDING))
    );
    assert_eq!(t["useMonitor"], true);
    assert_eq!(
        t["runOnStartup"], false,
        "never run on start-up in production"
    );
    assert_eq!(
        t["schedule"], "%CAS_SCHEDULE%",
        "the schedule is an app setting"
    );

    let ingest = read(&format!(
        "function-definitions/{INGEST_FUNCTION}/function.json"
    ));
    let q = &ingest["bindings"][0];
    assert_eq!(
        (q["type"].as_str(), q["name"].as_str()),
        (Some("queueTrigger"), Some(QUEUE_BINDING))
    );
    assert_eq!(q["queueName"], "%CAS_QUEUE_NAME%");
    assert_eq!(q["connection"], "AzureWebJobsStorage");
}
