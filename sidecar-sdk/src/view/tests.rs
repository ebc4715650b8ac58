use super::*;
use crate::testing::every_event;

#[test]
fn every_event_views_as_it_decodes() {
    for event in every_event() {
        let bytes = Bytes::from(event.encode_any_to_vec());
        let view = EventView::decode_any(&bytes).unwrap();
        assert_eq!(view.to_event(), event, "{}", event.hook());
        assert_eq!(view.to_event_in(&bytes), event);
        assert_eq!(view.hook(), event.hook());
        assert_eq!(view.client_id(), event.client_id());
        assert_eq!(view.mountpoint(), event.mountpoint());
        assert_eq!(view.session_id(), event.session_id());
        assert_eq!(view.username(), event.username());
        assert_eq!(view.timestamp().as_ref(), event.timestamp());
        assert_eq!(
            view.message(),
            event.message().map(|(t, p)| (t, p.as_ref()))
        );
    }
}
