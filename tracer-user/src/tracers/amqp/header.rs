//! AMQP 0-9-1 content headers (spec §4.2.6.1): the class, the body's size and, for the basic
//! class, the message properties that name a message (content type, correlation id, reply-to,
//! expiration, message id). Other properties are passed over.

use super::method::{BASIC, Cursor, DecodeError};

/// The message properties kept from a content header (§4.2.6.1, basic class properties).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
}

/// A content header: the content's class, the body's size and the properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentHeader {
    pub class: u16,
    pub body_size: u64,
    pub properties: Properties,
}

/// Decodes a content header's payload. The body size is in its first 12 bytes; properties cut
/// short by the capture are left out (the header is still returned).
pub fn decode_header(payload: &[u8]) -> Result<ContentHeader, DecodeError> {
    let mut c = Cursor::new(payload);
    let class = c.u16()?;
    c.u16()?; // weight
    let body_size = c.u64()?;
    let mut properties = Properties::default();
    // Property bits are read from bit 15 down; bit 0 of a flags word says another follows.
    let mut flags = vec![c.u16()?];
    while flags.last().is_some_and(|f| f & 1 != 0) && flags.len() < 4 {
        match c.u16() {
            Ok(f) => flags.push(f),
            Err(_) => break,
        }
    }
    if class == BASIC {
        let _ = read_basic_properties(&mut c, flags[0], &mut properties);
    }
    Ok(ContentHeader {
        class,
        body_size,
        properties,
    })
}

fn read_basic_properties(
    c: &mut Cursor<'_>,
    flags: u16,
    p: &mut Properties,
) -> Result<(), DecodeError> {
    let has = |n: u16| flags & (1 << n) != 0;
    if has(15) {
        p.content_type = Some(c.shortstr()?);
    }
    if has(14) {
        c.shortstr()?; // content-encoding
    }
    if has(13) {
        c.skip_long()?; // headers (a field table)
    }
    if has(12) {
        c.u8()?; // delivery-mode
    }
    if has(11) {
        c.u8()?; // priority
    }
    if has(10) {
        p.correlation_id = Some(c.shortstr()?);
    }
    if has(9) {
        p.reply_to = Some(c.shortstr()?);
    }
    if has(8) {
        p.expiration = Some(c.shortstr()?);
    }
    if has(7) {
        p.message_id = Some(c.shortstr()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracers::amqp::method::build;

    #[test]
    fn content_header_properties() {
        let h = decode_header(&build::header(
            314,
            Some("amq.rabbitmq.reply-to"),
            Some("30000"),
        ))
        .unwrap();
        assert_eq!((h.class, h.body_size), (60, 314));
        assert_eq!(
            h.properties.content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(
            h.properties.reply_to.as_deref(),
            Some("amq.rabbitmq.reply-to")
        );
        assert_eq!(h.properties.expiration.as_deref(), Some("30000"));
        // Cut inside the properties: the size is still known.
        let full = build::header(5, None, None);
        let h = decode_header(&full[..16]).unwrap();
        assert_eq!(h.body_size, 5);
        assert_eq!(h.properties.content_type, None);
        assert_eq!(decode_header(&full[..10]), Err(DecodeError::Short));
    }
}
