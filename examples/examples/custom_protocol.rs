//! A third codec: JSON behind a one-byte version prefix, negotiated as `json-v1`, plugged into
//! both the server and the client. Handlers do not change.
//!
//! ```text
//! cargo run -p wse-examples --example custom_protocol
//! ```

use serde_json::json;
use wse_client::Client;
use wse_core::{
    Json, MessageKind, PackError, PayloadError, PayloadVisitor, Protocol, RawFrame, UnpackError,
};
use wse_server::{Connection, Decision, Server};

/// `1` followed by the `wse-default-json` frame.
#[derive(Debug, Clone, Copy)]
struct PrefixedJson;

impl Protocol for PrefixedJson {
    fn name(&self) -> &str {
        "json-v1"
    }

    fn message_kind(&self) -> MessageKind {
        MessageKind::Text
    }

    fn pack(
        &self,
        kind: &str,
        payload: &dyn wse_core::erased_serde::Serialize,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        let mut out = b"1".to_vec();
        out.extend(Json.pack(kind, payload, stamp)?);
        Ok(out)
    }

    fn unpack<'a>(&self, data: &'a [u8]) -> Result<RawFrame<'a>, UnpackError> {
        match data.split_first() {
            Some((b'1', frame)) => Json.unpack(frame),
            _ => Err(UnpackError::NotAFrame("missing the version prefix")),
        }
    }

    fn deserialize_payload(
        &self,
        raw: &[u8],
        visit: &mut PayloadVisitor<'_>,
    ) -> Result<(), PayloadError> {
        Json.deserialize_payload(raw, visit)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(name) => Decision::accept(name, json!({"hello": name})),
            None => Decision::refuse(),
        }
    })
    .protocol(PrefixedJson)
    .build();
    server.register("add", |_: Connection, (a, b): (i64, i64)| async move {
        Ok(a + b)
    })?;
    let serving = server.bind("127.0.0.1:0").await?;

    let client = Client::builder(format!("ws://{}", serving.local_addr()))
        .protocol(PrefixedJson)
        .build();
    let welcome = client.connect(json!("carol"), json!({})).await?;
    let sum: i64 = client.call("add", &(40, 2)).await?;
    println!("welcome {welcome}, over {}: add = {sum}", client.protocol());

    client.close("wse.by-client").await;
    serving.shutdown().await;
    Ok(())
}
