//! Reason codes, one enum per packet kind (MQTT 5.0 section 2.4 and each packet's table), so a
//! code that a packet cannot carry cannot be written. MQTT 3 return codes (CONNACK, SUBACK)
//! are mapped where the packet is encoded or decoded for a v3 connection.

/// What every reason code enum offers.
pub trait ReasonCode: Copy + Sized + std::fmt::Debug + PartialEq + Eq + 'static {
    /// The "all is well" code of this packet kind.
    const SUCCESS: Self;
    /// The byte on the wire.
    fn code(self) -> u8;
    /// The code for a byte, if this packet kind has it.
    fn from_code(code: u8) -> Option<Self>;
}

macro_rules! reason_codes {
    ($(#[$doc:meta])* $name:ident, success: $success:ident { $($(#[$vdoc:meta])* $variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $code),+
        }

        impl ReasonCode for $name {
            const SUCCESS: Self = $name::$success;

            fn code(self) -> u8 {
                self as u8
            }

            fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        /// The code as a number (`0x87` is `135`), as traces show it.
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", *self as u8)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$success
            }
        }
    };
}

reason_codes! {
    /// CONNACK.
    ConnAckReason, success: Success {
        /// Connection accepted.
        Success = 0x00,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// The CONNECT could not be parsed.
        MalformedPacket = 0x81,
        /// The CONNECT violates the protocol.
        ProtocolError = 0x82,
        /// Valid but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// Protocol level not supported.
        UnsupportedProtocolVersion = 0x84,
        /// Client id not valid.
        ClientIdentifierNotValid = 0x85,
        /// Bad user name or password.
        BadUsernameOrPassword = 0x86,
        /// Not authorized.
        NotAuthorized = 0x87,
        /// Server unavailable.
        ServerUnavailable = 0x88,
        /// Server busy.
        ServerBusy = 0x89,
        /// Banned.
        Banned = 0x8A,
        /// Bad authentication method.
        BadAuthenticationMethod = 0x8C,
        /// Will topic not valid.
        TopicNameInvalid = 0x90,
        /// Packet too large.
        PacketTooLarge = 0x95,
        /// Quota exceeded (connection limits).
        QuotaExceeded = 0x97,
        /// Will payload format invalid.
        PayloadFormatInvalid = 0x99,
        /// Retained wills not supported.
        RetainNotSupported = 0x9A,
        /// Will QoS not supported.
        QosNotSupported = 0x9B,
        /// Use another server.
        UseAnotherServer = 0x9C,
        /// Server moved.
        ServerMoved = 0x9D,
        /// Too many connections per second.
        ConnectionRateExceeded = 0x9F,
    }
}

impl ConnAckReason {
    /// The MQTT 3 return code that says the same (3.1.1 section 3.2.2.3): refusals with no v3
    /// equivalent are "not authorized" when they concern the client's rights or its will, and
    /// "server unavailable" otherwise.
    pub fn v3_code(self) -> u8 {
        use ConnAckReason::*;
        match self {
            Success => 0,
            UnsupportedProtocolVersion => 1,
            ClientIdentifierNotValid => 2,
            BadUsernameOrPassword => 4,
            NotAuthorized
            | Banned
            | BadAuthenticationMethod
            | TopicNameInvalid
            | PayloadFormatInvalid
            | RetainNotSupported
            | QosNotSupported => 5,
            _ => 3,
        }
    }

    /// The reason an MQTT 3 return code stands for.
    pub fn from_v3_code(code: u8) -> Option<ConnAckReason> {
        Some(match code {
            0 => ConnAckReason::Success,
            1 => ConnAckReason::UnsupportedProtocolVersion,
            2 => ConnAckReason::ClientIdentifierNotValid,
            3 => ConnAckReason::ServerUnavailable,
            4 => ConnAckReason::BadUsernameOrPassword,
            5 => ConnAckReason::NotAuthorized,
            _ => return None,
        })
    }
}

reason_codes! {
    /// PUBACK and PUBREC.
    PubAckReason, success: Success {
        /// Accepted.
        Success = 0x00,
        /// Accepted, but nobody subscribed.
        NoMatchingSubscribers = 0x10,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// Valid but not accepted.
        ImplementationSpecificError = 0x83,
        /// Not authorized.
        NotAuthorized = 0x87,
        /// Topic name not valid.
        TopicNameInvalid = 0x90,
        /// Packet id in use.
        PacketIdentifierInUse = 0x91,
        /// Quota exceeded.
        QuotaExceeded = 0x97,
        /// Payload format invalid.
        PayloadFormatInvalid = 0x99,
    }
}

reason_codes! {
    /// PUBREL and PUBCOMP.
    PubRelReason, success: Success {
        /// Released / completed.
        Success = 0x00,
        /// Unknown packet id.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_codes! {
    /// One SUBACK entry: the QoS granted, or why the filter was refused.
    SubAckReason, success: GrantedQos0 {
        /// Granted at QoS 0.
        GrantedQos0 = 0x00,
        /// Granted at QoS 1.
        GrantedQos1 = 0x01,
        /// Granted at QoS 2.
        GrantedQos2 = 0x02,
        /// Unspecified error (MQTT 3: the only failure code).
        UnspecifiedError = 0x80,
        /// Valid but not accepted.
        ImplementationSpecificError = 0x83,
        /// Not authorized.
        NotAuthorized = 0x87,
        /// Filter not valid.
        TopicFilterInvalid = 0x8F,
        /// Packet id in use.
        PacketIdentifierInUse = 0x91,
        /// Quota exceeded (`max_subscriptions_per_client`).
        QuotaExceeded = 0x97,
        /// Shared subscriptions not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// Subscription identifiers not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// Wildcards not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

impl SubAckReason {
    /// The grant of `qos`.
    pub fn granted(qos: super::QoS) -> SubAckReason {
        match qos {
            super::QoS::AtMostOnce => SubAckReason::GrantedQos0,
            super::QoS::AtLeastOnce => SubAckReason::GrantedQos1,
            super::QoS::ExactlyOnce => SubAckReason::GrantedQos2,
        }
    }

    /// Whether the filter was refused.
    pub fn is_failure(self) -> bool {
        self.code() >= 0x80
    }

    /// The MQTT 3 code: the granted QoS, or 0x80 for any refusal.
    pub fn v3_code(self) -> u8 {
        if self.is_failure() { 0x80 } else { self.code() }
    }
}

reason_codes! {
    /// One UNSUBACK entry (MQTT 5 only).
    UnsubAckReason, success: Success {
        /// Removed.
        Success = 0x00,
        /// There was no such subscription.
        NoSubscriptionExisted = 0x11,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// Valid but not accepted.
        ImplementationSpecificError = 0x83,
        /// Not authorized.
        NotAuthorized = 0x87,
        /// Filter not valid.
        TopicFilterInvalid = 0x8F,
        /// Packet id in use.
        PacketIdentifierInUse = 0x91,
    }
}

reason_codes! {
    /// DISCONNECT (either way).
    DisconnectReason, success: NormalDisconnection {
        /// Normal disconnection: no will.
        NormalDisconnection = 0x00,
        /// The client goes, and wants its will published.
        DisconnectWithWill = 0x04,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// A packet could not be parsed.
        MalformedPacket = 0x81,
        /// A packet violated the protocol.
        ProtocolError = 0x82,
        /// Valid but not accepted.
        ImplementationSpecificError = 0x83,
        /// Not authorized.
        NotAuthorized = 0x87,
        /// Server busy.
        ServerBusy = 0x89,
        /// The server is shutting down.
        ServerShuttingDown = 0x8B,
        /// Keep-alive expired.
        KeepAliveTimeout = 0x8D,
        /// Another connection took the session over.
        SessionTakenOver = 0x8E,
        /// Topic filter not valid.
        TopicFilterInvalid = 0x8F,
        /// Topic name not valid.
        TopicNameInvalid = 0x90,
        /// More unacknowledged QoS 1/2 publishes than the receive maximum.
        ReceiveMaximumExceeded = 0x93,
        /// Topic alias out of range.
        TopicAliasInvalid = 0x94,
        /// Packet over the maximum size.
        PacketTooLarge = 0x95,
        /// Message rate too high.
        MessageRateTooHigh = 0x96,
        /// Quota exceeded.
        QuotaExceeded = 0x97,
        /// An operator closed the connection.
        AdministrativeAction = 0x98,
        /// Payload format invalid.
        PayloadFormatInvalid = 0x99,
        /// Retain not supported.
        RetainNotSupported = 0x9A,
        /// QoS not supported.
        QosNotSupported = 0x9B,
        /// Use another server.
        UseAnotherServer = 0x9C,
        /// Server moved.
        ServerMoved = 0x9D,
        /// Shared subscriptions not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// Connection rate exceeded.
        ConnectionRateExceeded = 0x9F,
        /// Maximum connect time.
        MaximumConnectTime = 0xA0,
        /// Subscription identifiers not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// Wildcard subscriptions not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

reason_codes! {
    /// AUTH.
    AuthReason, success: Success {
        /// Authentication succeeded.
        Success = 0x00,
        /// Continue the exchange.
        ContinueAuthentication = 0x18,
        /// Start again.
        ReAuthenticate = 0x19,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<R: ReasonCode>() {
        for b in 0..=255u8 {
            if let Some(r) = R::from_code(b) {
                assert_eq!(r.code(), b, "{r:?}");
            }
        }
        assert_eq!(R::from_code(R::SUCCESS.code()), Some(R::SUCCESS));
    }

    #[test]
    fn codes_roundtrip_and_unknown_bytes_are_none() {
        roundtrip::<ConnAckReason>();
        roundtrip::<PubAckReason>();
        roundtrip::<PubRelReason>();
        roundtrip::<SubAckReason>();
        roundtrip::<UnsubAckReason>();
        roundtrip::<DisconnectReason>();
        roundtrip::<AuthReason>();
        assert_eq!(PubRelReason::from_code(0x10), None);
        assert_eq!(DisconnectReason::from_code(0x01), None);
    }

    #[test]
    fn v3_mappings() {
        for b in 0..=5 {
            assert_eq!(ConnAckReason::from_v3_code(b).unwrap().v3_code(), b);
        }
        assert_eq!(ConnAckReason::from_v3_code(6), None);
        assert_eq!(ConnAckReason::QuotaExceeded.v3_code(), 3);
        assert_eq!(ConnAckReason::TopicNameInvalid.v3_code(), 5);
        assert_eq!(SubAckReason::NotAuthorized.v3_code(), 0x80);
        assert_eq!(SubAckReason::GrantedQos2.v3_code(), 2);
    }
}
