//! The listener over TLS: HTTP POST and WebSocket upgrade both work through rustls.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitamp_opamp::Fleet;
use gitamp_opamp::frame::{decode_frame, encode_frame};
use gitamp_opamp::proto::{AgentToServer, ServerToAgent};
use gitamp_opamp::server::{OpampSettings, TlsConfig, router, serve};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn tls_http_and_ws() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tls = TlsConfig::from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    assert!(TlsConfig::from_pem(b"", b"").is_err());

    let fleet = Arc::new(Fleet::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        router(fleet.clone(), OpampSettings::default()),
        Some(tls),
    ));

    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // HTTP POST over TLS.
    let msg = AgentToServer {
        instance_uid: Bytes::from_static(&[1; 16]),
        capabilities: 1,
        ..Default::default()
    };
    let body = msg.encode_to_vec();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = connector.connect(name.clone(), tcp).await.unwrap();
    let head = format!(
        "POST /v1/opamp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    let reply = ServerToAgent::decode(&raw[split + 4..]).unwrap();
    assert_eq!(&reply.instance_uid[..], &[1; 16]);

    // WebSocket over TLS.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = connector.connect(name, tcp).await.unwrap();
    let req = "wss://localhost/v1/opamp".into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, s).await.unwrap();
    let mut msg2 = msg.clone();
    msg2.instance_uid = Bytes::from_static(&[2; 16]);
    ws.send(Message::Binary(encode_frame(&msg2))).await.unwrap();
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("expected a binary reply");
    };
    let reply: ServerToAgent = decode_frame(b).unwrap();
    assert_eq!(&reply.instance_uid[..], &[2; 16]);
    assert_eq!(fleet.agents().len(), 2);
}
