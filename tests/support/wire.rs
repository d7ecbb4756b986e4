//! Raw OpAMP, below the simulated agent: protobuf pieces, a message fed to the session rules in
//! process (as the transports do), and a message POSTed over HTTP to a running server.

use gitamp_opamp::proto::{self, AgentToServer, ServerToAgent};
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::{Fleet, Uid};
use prost::Message;

/// A test uid: `0x10`, zeros, `n`.
pub fn uid(n: u8) -> Uid {
    let mut u = [0u8; 16];
    u[0] = 0x10;
    u[15] = n;
    u
}

/// A string attribute.
pub fn kv(k: &str, v: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: k.into(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(v.into())),
        }),
    }
}

/// Feed `msg` to the session rules on `conn` the way the transports do; the decoded reply.
pub fn exchange(fleet: &Fleet, conn: &mut Connection, msg: AgentToServer) -> ServerToAgent {
    let reply = handle_message(fleet, conn, msg).encode();
    ServerToAgent::decode(reply).expect("the reply decodes")
}

/// POST `body` to an OpAMP HTTP endpoint with extra headers: (status, body).
pub async fn post_opamp_raw(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (
        status,
        resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
    )
}

/// POST one message over OpAMP's HTTP transport: (status, decoded reply if 200).
pub async fn post_opamp(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    msg: &AgentToServer,
) -> (u16, Option<ServerToAgent>) {
    let (status, body) = post_opamp_raw(client, url, headers, msg.encode_to_vec()).await;
    let reply = (status == 200).then(|| ServerToAgent::decode(&body[..]).expect("reply decodes"));
    (status, reply)
}
