//! AMQP 0-9-1 method frames, decoded (spec §4.2.6, §4.2.6.1, and the
//! class/method table of amqp0-9-1.xml). Only the arguments that locate a message (exchange,
//! routing key, queue, delivery tag) or tell of a failure (close codes) are kept; other methods
//! are known by name only.

/// What a payload could not be decoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends (or was not captured) before the arguments do.
    #[error("method or header payload cut short")]
    Short,
}

/// A method and the arguments kept from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Publish {
        exchange: String,
        routing_key: String,
        mandatory: bool,
    },
    Deliver {
        consumer_tag: String,
        delivery_tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
    },
    GetOk {
        delivery_tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
        message_count: u32,
    },
    Return {
        reply_code: u16,
        reply_text: String,
        exchange: String,
        routing_key: String,
    },
    Get {
        queue: String,
        no_ack: bool,
    },
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    Nack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        delivery_tag: u64,
        requeue: bool,
    },
    Consume {
        queue: String,
        consumer_tag: String,
        no_ack: bool,
    },
    ConsumeOk {
        consumer_tag: String,
    },
    Qos {
        prefetch_count: u16,
        global: bool,
    },
    QueueDeclare {
        queue: String,
        passive: bool,
        durable: bool,
    },
    QueueDeclareOk {
        queue: String,
        message_count: u32,
        consumer_count: u32,
    },
    QueueBind {
        queue: String,
        exchange: String,
        routing_key: String,
    },
    ExchangeDeclare {
        exchange: String,
        kind: String,
        passive: bool,
        durable: bool,
    },
    /// Connection.Tune and Connection.Tune-Ok.
    Tune {
        ok: bool,
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    /// Connection.Close (class 10) or Channel.Close (class 20): a reply code other than 200
    /// is an error the broker or the client raised.
    Close {
        class: u16,
        reply_code: u16,
        reply_text: String,
        failing_class: u16,
        failing_method: u16,
    },
    /// Any other method: known by its ids (see [`method_name`]).
    Other {
        class: u16,
        method: u16,
    },
}

pub const CONNECTION: u16 = 10;
pub const BASIC: u16 = 60;

impl Method {
    /// (class id, method id).
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::Publish { .. } => (BASIC, 40),
            Method::Deliver { .. } => (BASIC, 60),
            Method::GetOk { .. } => (BASIC, 71),
            Method::Return { .. } => (BASIC, 50),
            Method::Get { .. } => (BASIC, 70),
            Method::Ack { .. } => (BASIC, 80),
            Method::Nack { .. } => (BASIC, 120),
            Method::Reject { .. } => (BASIC, 90),
            Method::Consume { .. } => (BASIC, 20),
            Method::ConsumeOk { .. } => (BASIC, 21),
            Method::Qos { .. } => (BASIC, 10),
            Method::QueueDeclare { .. } => (50, 10),
            Method::QueueDeclareOk { .. } => (50, 11),
            Method::QueueBind { .. } => (50, 20),
            Method::ExchangeDeclare { .. } => (40, 10),
            Method::Tune { ok, .. } => (CONNECTION, if *ok { 31 } else { 30 }),
            Method::Close { class, .. } => (*class, if *class == CONNECTION { 50 } else { 40 }),
            Method::Other { class, method } => (*class, *method),
        }
    }

    /// "Basic.Publish", …, or "unknown".
    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests use it"))]
    pub fn name(&self) -> &'static str {
        let (c, m) = self.ids();
        method_name(c, m).unwrap_or("unknown")
    }

    /// Whether a content header and body frames follow it.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Method::Publish { .. }
                | Method::Deliver { .. }
                | Method::GetOk { .. }
                | Method::Return { .. }
        )
    }
}

/// The name of a method of AMQP 0-9-1 (with RabbitMQ's extensions: Confirm, Basic.Nack,
/// Connection.Blocked/Update-Secret, Exchange.Bind).
pub fn method_name(class: u16, method: u16) -> Option<&'static str> {
    Some(match (class, method) {
        (10, 10) => "Connection.Start",
        (10, 11) => "Connection.Start-Ok",
        (10, 20) => "Connection.Secure",
        (10, 21) => "Connection.Secure-Ok",
        (10, 30) => "Connection.Tune",
        (10, 31) => "Connection.Tune-Ok",
        (10, 40) => "Connection.Open",
        (10, 41) => "Connection.Open-Ok",
        (10, 50) => "Connection.Close",
        (10, 51) => "Connection.Close-Ok",
        (10, 60) => "Connection.Blocked",
        (10, 61) => "Connection.Unblocked",
        (10, 70) => "Connection.Update-Secret",
        (10, 71) => "Connection.Update-Secret-Ok",
        (20, 10) => "Channel.Open",
        (20, 11) => "Channel.Open-Ok",
        (20, 20) => "Channel.Flow",
        (20, 21) => "Channel.Flow-Ok",
        (20, 40) => "Channel.Close",
        (20, 41) => "Channel.Close-Ok",
        (40, 10) => "Exchange.Declare",
        (40, 11) => "Exchange.Declare-Ok",
        (40, 20) => "Exchange.Delete",
        (40, 21) => "Exchange.Delete-Ok",
        (40, 30) => "Exchange.Bind",
        (40, 31) => "Exchange.Bind-Ok",
        (40, 40) => "Exchange.Unbind",
        (40, 51) => "Exchange.Unbind-Ok",
        (50, 10) => "Queue.Declare",
        (50, 11) => "Queue.Declare-Ok",
        (50, 20) => "Queue.Bind",
        (50, 21) => "Queue.Bind-Ok",
        (50, 30) => "Queue.Purge",
        (50, 31) => "Queue.Purge-Ok",
        (50, 40) => "Queue.Delete",
        (50, 41) => "Queue.Delete-Ok",
        (50, 50) => "Queue.Unbind",
        (50, 51) => "Queue.Unbind-Ok",
        (60, 10) => "Basic.Qos",
        (60, 11) => "Basic.Qos-Ok",
        (60, 20) => "Basic.Consume",
        (60, 21) => "Basic.Consume-Ok",
        (60, 30) => "Basic.Cancel",
        (60, 31) => "Basic.Cancel-Ok",
        (60, 40) => "Basic.Publish",
        (60, 50) => "Basic.Return",
        (60, 60) => "Basic.Deliver",
        (60, 70) => "Basic.Get",
        (60, 71) => "Basic.Get-Ok",
        (60, 72) => "Basic.Get-Empty",
        (60, 80) => "Basic.Ack",
        (60, 90) => "Basic.Reject",
        (60, 100) => "Basic.Recover-Async",
        (60, 110) => "Basic.Recover",
        (60, 111) => "Basic.Recover-Ok",
        (60, 120) => "Basic.Nack",
        (85, 10) => "Confirm.Select",
        (85, 11) => "Confirm.Select-Ok",
        (90, 10) => "Tx.Select",
        (90, 11) => "Tx.Select-Ok",
        (90, 20) => "Tx.Commit",
        (90, 21) => "Tx.Commit-Ok",
        (90, 30) => "Tx.Rollback",
        (90, 31) => "Tx.Rollback-Ok",
        _ => return None,
    })
}

/// Reads AMQP's field types in order.
pub(super) struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, at: 0 }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Short)?;
        let s = self.b.get(self.at..end).ok_or(DecodeError::Short)?;
        self.at = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }

    pub(super) fn shortstr(&mut self) -> Result<String, DecodeError> {
        let n = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// A long string or a field table: skipped by its length.
    pub(super) fn skip_long(&mut self) -> Result<(), DecodeError> {
        let n = self.u32()? as usize;
        self.take(n).map(|_| ())
    }
}

fn bit(flags: u8, n: u8) -> bool {
    flags & (1 << n) != 0
}

/// Decodes a method frame's payload.
pub fn decode(payload: &[u8]) -> Result<Method, DecodeError> {
    let mut c = Cursor::new(payload);
    let class = c.u16()?;
    let method = c.u16()?;
    Ok(match (class, method) {
        (60, 40) => {
            c.u16()?; // reserved (ticket)
            let exchange = c.shortstr()?;
            let routing_key = c.shortstr()?;
            let flags = c.u8()?;
            Method::Publish {
                exchange,
                routing_key,
                mandatory: bit(flags, 0),
            }
        }
        (60, 60) => Method::Deliver {
            consumer_tag: c.shortstr()?,
            delivery_tag: c.u64()?,
            redelivered: bit(c.u8()?, 0),
            exchange: c.shortstr()?,
            routing_key: c.shortstr()?,
        },
        (60, 71) => Method::GetOk {
            delivery_tag: c.u64()?,
            redelivered: bit(c.u8()?, 0),
            exchange: c.shortstr()?,
            routing_key: c.shortstr()?,
            message_count: c.u32()?,
        },
        (60, 50) => Method::Return {
            reply_code: c.u16()?,
            reply_text: c.shortstr()?,
            exchange: c.shortstr()?,
            routing_key: c.shortstr()?,
        },
        (60, 70) => {
            c.u16()?;
            Method::Get {
                queue: c.shortstr()?,
                no_ack: bit(c.u8()?, 0),
            }
        }
        (60, 80) => Method::Ack {
            delivery_tag: c.u64()?,
            multiple: bit(c.u8()?, 0),
        },
        (60, 120) => {
            let delivery_tag = c.u64()?;
            let flags = c.u8()?;
            Method::Nack {
                delivery_tag,
                multiple: bit(flags, 0),
                requeue: bit(flags, 1),
            }
        }
        (60, 90) => Method::Reject {
            delivery_tag: c.u64()?,
            requeue: bit(c.u8()?, 0),
        },
        (60, 20) => {
            c.u16()?;
            let queue = c.shortstr()?;
            let consumer_tag = c.shortstr()?;
            let flags = c.u8()?;
            Method::Consume {
                queue,
                consumer_tag,
                no_ack: bit(flags, 1),
            }
        }
        (60, 21) => Method::ConsumeOk {
            consumer_tag: c.shortstr()?,
        },
        (60, 10) => {
            c.u32()?; // prefetch-size
            Method::Qos {
                prefetch_count: c.u16()?,
                global: bit(c.u8()?, 0),
            }
        }
        (50, 10) => {
            c.u16()?;
            let queue = c.shortstr()?;
            let flags = c.u8()?;
            Method::QueueDeclare {
                queue,
                passive: bit(flags, 0),
                durable: bit(flags, 1),
            }
        }
        (50, 11) => Method::QueueDeclareOk {
            queue: c.shortstr()?,
            message_count: c.u32()?,
            consumer_count: c.u32()?,
        },
        (50, 20) => {
            c.u16()?;
            Method::QueueBind {
                queue: c.shortstr()?,
                exchange: c.shortstr()?,
                routing_key: c.shortstr()?,
            }
        }
        (40, 10) => {
            c.u16()?;
            let exchange = c.shortstr()?;
            let kind = c.shortstr()?;
            let flags = c.u8()?;
            Method::ExchangeDeclare {
                exchange,
                kind,
                passive: bit(flags, 0),
                durable: bit(flags, 1),
            }
        }
        (10, 30) | (10, 31) => Method::Tune {
            ok: method == 31,
            channel_max: c.u16()?,
            frame_max: c.u32()?,
            heartbeat: c.u16()?,
        },
        (10, 50) | (20, 40) => Method::Close {
            class,
            reply_code: c.u16()?,
            reply_text: c.shortstr()?,
            failing_class: c.u16()?,
            failing_method: c.u16()?,
        },
        _ => Method::Other { class, method },
    })
}

#[cfg(test)]
pub(crate) mod build {
    //! Payload builders for the tests.

    pub fn shortstr(v: &mut Vec<u8>, s: &str) {
        v.push(s.len() as u8);
        v.extend_from_slice(s.as_bytes());
    }

    pub fn publish(exchange: &str, routing_key: &str) -> Vec<u8> {
        let mut v = vec![0, 60, 0, 40, 0, 0];
        shortstr(&mut v, exchange);
        shortstr(&mut v, routing_key);
        v.push(0);
        v
    }

    pub fn deliver(tag: u64, exchange: &str, routing_key: &str) -> Vec<u8> {
        let mut v = vec![0, 60, 0, 60];
        shortstr(&mut v, "ctag");
        v.extend_from_slice(&tag.to_be_bytes());
        v.push(0);
        shortstr(&mut v, exchange);
        shortstr(&mut v, routing_key);
        v
    }

    /// A basic content header with content-type, headers (empty), delivery-mode and the
    /// optional reply-to and expiration, like kombu's.
    pub fn header(body_size: u64, reply_to: Option<&str>, expiration: Option<&str>) -> Vec<u8> {
        let mut flags: u16 = 1 << 15 | 1 << 13 | 1 << 12;
        if reply_to.is_some() {
            flags |= 1 << 9;
        }
        if expiration.is_some() {
            flags |= 1 << 8;
        }
        let mut v = vec![0, 60, 0, 0];
        v.extend_from_slice(&body_size.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        shortstr(&mut v, "application/json");
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.push(2);
        if let Some(r) = reply_to {
            shortstr(&mut v, r);
        }
        if let Some(e) = expiration {
            shortstr(&mut v, e);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_methods_that_carry_messages() {
        let m = decode(&build::publish("openstack", "scalp_rpc")).unwrap();
        assert_eq!(
            m,
            Method::Publish {
                exchange: "openstack".into(),
                routing_key: "scalp_rpc".into(),
                mandatory: false
            }
        );
        assert_eq!(m.name(), "Basic.Publish");
        assert!(m.has_content());
        let m = decode(&build::deliver(7, "", "reply_1")).unwrap();
        assert!(
            matches!(m, Method::Deliver { delivery_tag: 7, ref routing_key, .. } if routing_key == "reply_1")
        );
        // Basic.Ack as RabbitMQ confirms a publish: tag 1, not multiple.
        let ack = [0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            decode(&ack).unwrap(),
            Method::Ack {
                delivery_tag: 1,
                multiple: false
            }
        );
        assert_eq!(decode(&ack[..8]), Err(DecodeError::Short));
    }

    #[test]
    fn decodes_close_tune_and_names_the_rest() {
        let mut close = vec![0, 20, 0, 40, 1, 148];
        build::shortstr(&mut close, "NOT_FOUND - no exchange 'x'");
        close.extend_from_slice(&[0, 60, 0, 40]);
        let m = decode(&close).unwrap();
        assert_eq!(m.name(), "Channel.Close");
        assert!(matches!(
            m,
            Method::Close {
                reply_code: 404,
                failing_class: 60,
                failing_method: 40,
                ..
            }
        ));
        let tune = [0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60];
        assert!(matches!(
            decode(&tune).unwrap(),
            Method::Tune {
                ok: false,
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: 60
            }
        ));
        assert_eq!(decode(&[0, 85, 0, 11]).unwrap().name(), "Confirm.Select-Ok");
        assert_eq!(decode(&[0, 99, 0, 1]).unwrap().name(), "unknown");
    }
}
