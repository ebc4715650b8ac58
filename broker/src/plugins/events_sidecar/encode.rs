//! Hook notifications as `eventssidecar.v1` messages, every field filled as the wire contract
//! says: timestamp at hook time (ns), session id, peer, username, mountpoint, ACL, reasons.

use std::time::SystemTime;

use vmq_sidecar_sdk::Event;
use vmq_sidecar_sdk::proto::Timestamp;
use vmq_sidecar_sdk::proto::v1 as pb;

use crate::hooks::{ClientInfo, DisconnectReason, MatchedAcl, Notification, RegisterFailure};

/// The time now, as events carry it.
pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn acl(a: Option<&MatchedAcl>) -> Option<pb::MatchedAcl> {
    a.map(|a| pb::MatchedAcl {
        name: a.name.clone(),
        pattern: a.pattern.clone(),
    })
}

fn username(c: &ClientInfo) -> String {
    c.username.clone().unwrap_or_default()
}

fn reason(r: DisconnectReason) -> i32 {
    (match r {
        DisconnectReason::NormalDisconnect => pb::Reason::NormalDisconnect,
        DisconnectReason::SessionTakenOver => pb::Reason::SessionTakenOver,
        DisconnectReason::AdministrativeAction => pb::Reason::AdministrativeAction,
        DisconnectReason::KeepAliveTimeout => pb::Reason::DisconnectKeepAlive,
        DisconnectReason::ProtocolError => pb::Reason::ProtocolError,
        DisconnectReason::ReceiveMaxExceeded => pb::Reason::ReceiveMaxExceeded,
        DisconnectReason::TcpClosed => pb::Reason::TcpClosed,
    }) as i32
}

/// The event for a notification, stamped `timestamp`, from `node` (empty on a single node).
/// The relay writes the per-message events with `frame.rs` instead; for those this is the
/// reference its tests compare against.
pub fn to_event(n: &Notification<'_>, timestamp: Timestamp, node: &str) -> Event {
    let timestamp = Some(timestamp);
    match *n {
        Notification::Register { client, properties } => pb::OnRegister {
            timestamp,
            peer_addr: client.peer.ip().to_string(),
            peer_port: i32::from(client.peer.port()),
            username: username(client),
            mountpoint: client.mountpoint.clone(),
            client_id: client.client_id.to_string(),
            user_properties: properties.user_properties.iter().cloned().collect(),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::RegisterFailed {
            client,
            clean_session,
            reason,
            ..
        } => pb::OnRegisterFailed {
            timestamp,
            mountpoint: client.mountpoint.clone(),
            client_id: client.client_id.to_string(),
            peer_addr: client.peer.ip().to_string(),
            peer_port: i32::from(client.peer.port()),
            username: username(client),
            clean_session,
            reason: (match reason {
                RegisterFailure::NoMatchingHookFound => {
                    pb::RegistrationFailureReason::NoMatchingHookFound
                }
                RegisterFailure::InvalidCredentials => {
                    pb::RegistrationFailureReason::InvalidCredentials
                }
                RegisterFailure::NotAuthorized => pb::RegistrationFailureReason::NotAuthorized,
            }) as i32,
            node: node.to_owned(),
        }
        .into(),
        Notification::Publish {
            client,
            message,
            acl: a,
        } => pb::OnPublish {
            timestamp,
            username: username(client),
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            qos: message.qos as i32,
            topic: message.topic.to_owned(),
            payload: message.payload.clone(),
            retain: message.retain,
            matched_acl: acl(a),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::Subscribe { client, topics, .. } => pb::OnSubscribe {
            timestamp,
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            username: username(client),
            topics: topics
                .iter()
                .map(|t| pb::TopicInfo {
                    topic: t.filter.clone(),
                    qos: i32::from(t.qos),
                    matched_acl: acl(t.acl.as_ref()),
                })
                .collect(),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::Unsubscribe { client, topics } => pb::OnUnsubscribe {
            timestamp,
            username: username(client),
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            topics: topics.to_vec(),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::Deliver {
            client,
            message,
            persisted,
            acl: a,
        } => pb::OnDeliver {
            timestamp,
            username: username(client),
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            topic: message.topic.to_owned(),
            qos: message.qos as i32,
            is_retain: message.retain,
            payload: message.payload.clone(),
            matched_acl: acl(a),
            persisted,
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::DeliveryComplete {
            client,
            message,
            persisted,
            acl: a,
        } => pb::OnDeliveryComplete {
            timestamp,
            username: username(client),
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            topic: message.topic.to_owned(),
            qos: message.qos as i32,
            is_retain: message.retain,
            payload: message.payload.clone(),
            matched_acl: acl(a),
            persisted,
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::OfflineMessage {
            mountpoint,
            client_id,
            session_id,
            message,
        } => pb::OnOfflineMessage {
            timestamp,
            client_id: client_id.to_owned(),
            mountpoint: mountpoint.to_owned(),
            qos: message.qos as i32,
            topic: message.topic.to_owned(),
            payload: message.payload.clone(),
            retain: message.retain,
            session_id: session_id.to_owned(),
            node: node.to_owned(),
        }
        .into(),
        Notification::MessageDrop {
            mountpoint,
            client_id,
            session_id,
            message,
            reason,
            acl: a,
        } => pb::OnMessageDrop {
            timestamp,
            client_id: client_id.to_owned(),
            mountpoint: mountpoint.to_owned(),
            qos: message.qos as i32,
            topic: message.topic.to_owned(),
            payload: message.payload.clone(),
            reason: reason.to_owned(),
            matched_acl: acl(a),
            session_id: session_id.to_owned(),
            node: node.to_owned(),
        }
        .into(),
        Notification::ClientWakeup { client } => pb::OnClientWakeUp {
            timestamp,
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::ClientOffline { client, reason: r } => pb::OnClientOffline {
            timestamp,
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            reason: reason(r),
            username: username(client),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::ClientGone { client, reason: r } => pb::OnClientGone {
            timestamp,
            client_id: client.client_id.to_string(),
            mountpoint: client.mountpoint.clone(),
            reason: reason(r),
            username: username(client),
            session_id: client.session_id.to_string(),
            node: node.to_owned(),
        }
        .into(),
        Notification::SessionExpired {
            mountpoint,
            client_id,
            session_id,
        } => pb::OnSessionExpired {
            timestamp,
            client_id: client_id.to_owned(),
            mountpoint: mountpoint.to_owned(),
            session_id: session_id.to_owned(),
            node: node.to_owned(),
        }
        .into(),
    }
}

/// The (mountpoint, client id) whose events must stay in order: picks the connection.
pub fn order_key<'a>(n: &Notification<'a>) -> (&'a str, &'a str) {
    match *n {
        Notification::Register { client, .. }
        | Notification::RegisterFailed { client, .. }
        | Notification::Publish { client, .. }
        | Notification::Subscribe { client, .. }
        | Notification::Unsubscribe { client, .. }
        | Notification::Deliver { client, .. }
        | Notification::DeliveryComplete { client, .. }
        | Notification::ClientWakeup { client }
        | Notification::ClientOffline { client, .. }
        | Notification::ClientGone { client, .. } => (&client.mountpoint, &client.client_id),
        Notification::OfflineMessage {
            mountpoint,
            client_id,
            ..
        }
        | Notification::MessageDrop {
            mountpoint,
            client_id,
            ..
        }
        | Notification::SessionExpired {
            mountpoint,
            client_id,
            ..
        } => (mountpoint, client_id),
    }
}

/// The ACL name sampling rules look at.
pub fn acl_name<'a>(n: &Notification<'a>) -> Option<&'a str> {
    match *n {
        Notification::Publish { acl, .. }
        | Notification::Deliver { acl, .. }
        | Notification::DeliveryComplete { acl, .. } => acl.map(|a| a.name.as_str()),
        _ => None,
    }
}
