//! The field kinds of a borrowed event view, each decoded with prost's own wire primitives
//! (`decode_key`, `decode_varint`, `skip_field`, `merge_loop`, the scalar `merge`s) so that a view
//! accepts and refuses exactly the bytes prost's generated decoder does, but borrows strings and
//! bytes from the frame instead of allocating.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use prost::DecodeError;
use prost::encoding::{
    DecodeContext, WireType, bool as pbool, check_wire_type, decode_key, decode_varint, int32,
    int64, merge_loop, skip_field,
};
use vmq_sidecar_proto::Timestamp;
use vmq_sidecar_proto::v1::{MatchedAcl, TopicInfo};

/// Where a view's slices come from. With the frame's `Bytes`, the owned copy of a payload is a
/// slice of the frame (no copy); without it, the payload is copied.
#[derive(Clone, Copy)]
pub(crate) struct Source<'f>(pub(crate) Option<&'f Bytes>);

impl Source<'_> {
    pub(crate) fn bytes(self, slice: &[u8]) -> Bytes {
        match self.0 {
            Some(frame) if !slice.is_empty() && contains(frame, slice) => frame.slice_ref(slice),
            _ => Bytes::copy_from_slice(slice),
        }
    }
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// One field of a view: how its wire value merges into it (proto3: the last scalar wins,
/// messages merge, repeated fields append) and how it becomes the owned field.
pub(crate) trait Field<'a>: Default {
    /// The owned message's field type.
    type Owned;
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError>;
    fn owned(&self, src: Source<'_>) -> Self::Owned;
    /// Called once before decoding with the message body and the field's tag: repeated fields
    /// keep them to iterate later.
    fn begin(&mut self, _body: &'a [u8], _tag: u32) {}
}

/// The length-delimited value at the front of `buf`, borrowed.
#[inline]
fn delimited<'a>(wire: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    check_wire_type(WireType::LengthDelimited, wire)?;
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(underflow());
    }
    let (value, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(value)
}

/// prost's own "buffer underflow" error, for a length longer than what is left.
#[cold]
fn underflow() -> DecodeError {
    match skip_field(
        WireType::SixtyFourBit,
        1,
        &mut &[][..],
        DecodeContext::default(),
    ) {
        Err(e) => e,
        Ok(()) => unreachable!("skipping 8 bytes of nothing succeeded"),
    }
}

/// prost's own error for a string that is not UTF-8.
#[cold]
fn not_utf8(bytes: &[u8]) -> DecodeError {
    let mut framed = Vec::with_capacity(bytes.len() + 10);
    prost::encoding::encode_varint(bytes.len() as u64, &mut framed);
    framed.extend_from_slice(bytes);
    let mut sink = String::new();
    match prost::encoding::string::merge(
        WireType::LengthDelimited,
        &mut sink,
        &mut framed.as_slice(),
        DecodeContext::default(),
    ) {
        Err(e) => e,
        Ok(()) => unreachable!("invalid UTF-8 decoded as a string"),
    }
}

#[inline]
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| not_utf8(bytes))
}

/// A message field: `merge_loop` over its body, `field` merging each known tag.
#[inline]
fn message<'a, T>(
    wire: WireType,
    value: &mut T,
    buf: &mut &'a [u8],
    ctx: DecodeContext,
    field: impl FnMut(
        &mut T,
        u32,
        WireType,
        &mut &'a [u8],
        DecodeContext,
    ) -> Option<Result<(), DecodeError>>,
) -> Result<(), DecodeError> {
    check_wire_type(WireType::LengthDelimited, wire)?;
    message_body(value, buf, ctx, field)
}

/// The body of a message field, whatever the wire type said: what prost does for map entries.
#[inline]
fn message_body<'a, T>(
    value: &mut T,
    buf: &mut &'a [u8],
    ctx: DecodeContext,
    mut field: impl FnMut(
        &mut T,
        u32,
        WireType,
        &mut &'a [u8],
        DecodeContext,
    ) -> Option<Result<(), DecodeError>>,
) -> Result<(), DecodeError> {
    merge_loop(value, buf, ctx, |value, buf, ctx| {
        let (tag, wire) = decode_key(buf)?;
        match field(value, tag, wire, buf, ctx.clone()) {
            Some(result) => result,
            None => skip_field(wire, tag, buf, ctx),
        }
    })
}

impl<'a> Field<'a> for &'a str {
    type Owned = String;
    #[inline]
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &'a [u8],
        _: DecodeContext,
    ) -> Result<(), DecodeError> {
        *self = utf8(delimited(wire, buf)?)?;
        Ok(())
    }
    fn owned(&self, _: Source<'_>) -> String {
        (*self).to_owned()
    }
}

impl<'a> Field<'a> for &'a [u8] {
    type Owned = Bytes;
    #[inline]
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &'a [u8],
        _: DecodeContext,
    ) -> Result<(), DecodeError> {
        *self = delimited(wire, buf)?;
        Ok(())
    }
    fn owned(&self, src: Source<'_>) -> Bytes {
        src.bytes(self)
    }
}

impl Field<'_> for i32 {
    type Owned = i32;
    #[inline]
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &[u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        int32::merge(wire, self, buf, ctx)
    }
    fn owned(&self, _: Source<'_>) -> i32 {
        *self
    }
}

impl Field<'_> for bool {
    type Owned = bool;
    #[inline]
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &[u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        pbool::merge(wire, self, buf, ctx)
    }
    fn owned(&self, _: Source<'_>) -> bool {
        *self
    }
}

impl Field<'_> for Option<Timestamp> {
    type Owned = Option<Timestamp>;
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &[u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let ts = self.get_or_insert_with(Timestamp::default);
        message(wire, ts, buf, ctx, |ts, tag, wire, buf, ctx| match tag {
            1 => Some(int64::merge(wire, &mut ts.seconds, buf, ctx)),
            2 => Some(int32::merge(wire, &mut ts.nanos, buf, ctx)),
            _ => None,
        })
    }
    fn owned(&self, _: Source<'_>) -> Option<Timestamp> {
        *self
    }
}

/// `eventssidecar.v1.MatchedACL`, borrowed: the ACL entry that allowed the action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchedAclView<'a> {
    /// The ACL's name.
    pub name: &'a str,
    /// The pattern that matched.
    pub pattern: &'a str,
}

impl<'a> MatchedAclView<'a> {
    fn merge_into(
        &mut self,
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        message(wire, self, buf, ctx, |acl, tag, wire, buf, ctx| match tag {
            1 => Some(acl.name.merge(wire, buf, ctx)),
            2 => Some(acl.pattern.merge(wire, buf, ctx)),
            _ => None,
        })
    }

    /// The owned message.
    pub fn to_owned_message(&self) -> MatchedAcl {
        MatchedAcl {
            name: self.name.to_owned(),
            pattern: self.pattern.to_owned(),
        }
    }
}

impl<'a> Field<'a> for Option<MatchedAclView<'a>> {
    type Owned = Option<MatchedAcl>;
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.get_or_insert_with(MatchedAclView::default)
            .merge_into(wire, buf, ctx)
    }
    fn owned(&self, _: Source<'_>) -> Option<MatchedAcl> {
        self.as_ref().map(MatchedAclView::to_owned_message)
    }
}

/// `eventssidecar.v1.TopicInfo`, borrowed: one topic of a SUBSCRIBE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicInfoView<'a> {
    /// The topic filter.
    pub topic: &'a str,
    /// The QoS granted.
    pub qos: i32,
    /// The ACL entry that allowed it, if any.
    pub matched_acl: Option<MatchedAclView<'a>>,
}

/// An element of a repeated field: decoded once when the view is made (to refuse what prost
/// refuses), then again, infallibly, each time the field is iterated.
pub trait Element<'a>: Sized {
    /// The owned collection the repeated field becomes.
    #[doc(hidden)]
    type Owned;
    #[doc(hidden)]
    fn decode_one(
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<Self, DecodeError>;
    #[doc(hidden)]
    fn collect(items: impl Iterator<Item = Self>) -> Self::Owned;
}

impl<'a> Element<'a> for &'a str {
    type Owned = Vec<String>;
    fn decode_one(
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<Self, DecodeError> {
        let mut s = "";
        s.merge(wire, buf, ctx)?;
        Ok(s)
    }
    fn collect(items: impl Iterator<Item = Self>) -> Vec<String> {
        items.map(str::to_owned).collect()
    }
}

impl<'a> Element<'a> for TopicInfoView<'a> {
    type Owned = Vec<TopicInfo>;
    fn decode_one(
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<Self, DecodeError> {
        let mut info = TopicInfoView::default();
        message(
            wire,
            &mut info,
            buf,
            ctx,
            |info, tag, wire, buf, ctx| match tag {
                1 => Some(info.topic.merge(wire, buf, ctx)),
                2 => Some(info.qos.merge(wire, buf, ctx)),
                3 => Some(info.matched_acl.merge(wire, buf, ctx)),
                _ => None,
            },
        )?;
        Ok(info)
    }
    fn collect(items: impl Iterator<Item = Self>) -> Vec<TopicInfo> {
        items
            .map(|t| TopicInfo {
                topic: t.topic.to_owned(),
                qos: t.qos,
                matched_acl: t.matched_acl.map(|a| a.to_owned_message()),
            })
            .collect()
    }
}

/// One entry of a `map<string, string>` (a missing key or value is `""`, as in protobuf). As
/// prost does, the entry's wire type is not checked: its length and body are read whatever it
/// says.
impl<'a> Element<'a> for (&'a str, &'a str) {
    type Owned = HashMap<String, String>;
    fn decode_one(
        _: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<Self, DecodeError> {
        let mut entry = ("", "");
        message_body(
            &mut entry,
            buf,
            ctx,
            |(k, v), tag, wire, buf, ctx| match tag {
                1 => Some(k.merge(wire, buf, ctx)),
                2 => Some(v.merge(wire, buf, ctx)),
                _ => None,
            },
        )?;
        Ok(entry)
    }
    /// Later entries of a repeated key win, as protobuf's map semantics say.
    fn collect(items: impl Iterator<Item = Self>) -> HashMap<String, String> {
        items.map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

/// A repeated field, iterated lazily from the message body it was validated in: no allocation
/// when the view is made. A `map` field is a `Repeated` of `(key, value)` in wire order (a
/// repeated key appears twice; the owned map keeps the last).
#[derive(Clone, Copy)]
pub struct Repeated<'a, E> {
    body: &'a [u8],
    tag: u32,
    len: usize,
    _element: PhantomData<E>,
}

impl<E> Default for Repeated<'_, E> {
    fn default() -> Self {
        Repeated {
            body: &[],
            tag: 0,
            len: 0,
            _element: PhantomData,
        }
    }
}

impl<'a, E: Element<'a>> Repeated<'a, E> {
    /// How many elements the field holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the field holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements in wire order.
    pub fn iter(&self) -> RepeatedIter<'a, E> {
        RepeatedIter {
            rest: self.body,
            tag: self.tag,
            left: self.len,
            _element: PhantomData,
        }
    }
}

impl<'a, E: Element<'a>> IntoIterator for Repeated<'a, E> {
    type Item = E;
    type IntoIter = RepeatedIter<'a, E>;
    fn into_iter(self) -> RepeatedIter<'a, E> {
        self.iter()
    }
}

impl<'a, E: Element<'a> + fmt::Debug> fmt::Debug for Repeated<'a, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, E: Element<'a> + PartialEq> PartialEq for Repeated<'a, E> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<'a, E: Element<'a>> Field<'a> for Repeated<'a, E> {
    type Owned = E::Owned;
    fn begin(&mut self, body: &'a [u8], tag: u32) {
        self.body = body;
        self.tag = tag;
    }
    fn merge(
        &mut self,
        wire: WireType,
        buf: &mut &'a [u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        E::decode_one(wire, buf, ctx)?;
        self.len += 1;
        Ok(())
    }
    fn owned(&self, _: Source<'_>) -> E::Owned {
        E::collect(self.iter())
    }
}

/// The elements of a [`Repeated`] field.
pub struct RepeatedIter<'a, E> {
    rest: &'a [u8],
    tag: u32,
    left: usize,
    _element: PhantomData<E>,
}

impl<'a, E: Element<'a>> Iterator for RepeatedIter<'a, E> {
    type Item = E;

    fn next(&mut self) -> Option<E> {
        // The body was decoded whole when the view was made: nothing below can fail, and if it
        // did the iteration would just end.
        while self.left > 0 && !self.rest.is_empty() {
            let (tag, wire) = decode_key(&mut self.rest).ok()?;
            let ctx = DecodeContext::default();
            if tag == self.tag {
                self.left -= 1;
                return E::decode_one(wire, &mut self.rest, ctx).ok();
            }
            skip_field(wire, tag, &mut self.rest, ctx).ok()?;
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<'a, E: Element<'a>> ExactSizeIterator for RepeatedIter<'a, E> {}
