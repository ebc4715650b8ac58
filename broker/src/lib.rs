//! vmq-broker: an MQTT broker in the mould of VerneMQ. Data flows one way:
//! listener -> connection (codec) -> session -> router -> session -> connection.

pub mod mqtt;
