use super::*;

fn connect(v: Version) -> Connect {
    Connect {
        version: v,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::default(),
        client_id: "d1".into(),
        will: Some(LastWill {
            topic: "devices/d1/status".into(),
            payload: Bytes::from_static(b"gone"),
            qos: 1,
            retain: true,
            properties: Properties {
                will_delay: if v == Version::V5 { Some(5) } else { None },
                ..Properties::default()
            },
        }),
        username: Some("d1".into()),
        password: Some(Bytes::from_static(b"tok")),
    }
}

#[test]
fn connect_roundtrip_both_versions() {
    for v in [Version::V311, Version::V5] {
        let mut c = connect(v);
        if v == Version::V5 {
            c.properties.session_expiry = Some(60);
            c.properties.maximum_packet_size = Some(1000);
            c.properties.user.push(("k".into(), "v".into()));
        }
        let b = encode_connect(&c);
        assert_eq!(decode(&b, None), Ok(Packet::Connect(Box::new(c))));
    }
}

#[test]
fn publish_roundtrip_and_size() {
    for v in [Version::V311, Version::V5] {
        let p = Publish {
            dup: true,
            qos: 2,
            retain: true,
            topic: "a/b".into(),
            pid: 9,
            properties: if v == Version::V5 {
                Properties {
                    content_type: Some("json".into()),
                    subscription_ids: vec![],
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
            payload: Bytes::from_static(b"xyz"),
        };
        let mut out = BytesMut::new();
        let n = encode(&Packet::Publish(p.clone()), v, &mut out);
        assert_eq!(n, out.len());
        assert_eq!(p.encoded_len(v), n);
        assert_eq!(decode(&out, Some(v)), Ok(Packet::Publish(p)));
    }
}

#[test]
fn frame_refuses_oversize_before_body() {
    // 0x30, remaining length 2_000_000: refused from 4 header bytes.
    assert_eq!(
        frame(&[0x30, 0x80, 0x89, 0x7a], 1024),
        Ok(Framed::TooLarge(2_000_004))
    );
    assert_eq!(frame(&[0x30], 1024), Ok(Framed::Incomplete));
    assert_eq!(
        frame(&[0x30, 0xff, 0xff, 0xff, 0xff], usize::MAX),
        Err(DecodeError::BadLength)
    );
}

#[test]
fn malformed_inputs_are_errors() {
    let v = Some(Version::V5);
    // QoS 3.
    assert_eq!(decode(&[0x36, 2, 0, 0], v), Err(DecodeError::Flags));
    // SUBSCRIBE with wrong flags.
    assert_eq!(decode(&[0x80, 3, 0, 1, 0], v), Err(DecodeError::Flags));
    // Duplicate property.
    assert_eq!(
        decode(&[0xe0, 12, 0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1], v),
        Err(DecodeError::Property(0x11))
    );
    // Non-CONNECT first.
    assert!(decode(&[0xc0, 0], None).is_err());
    // Truncated.
    assert_eq!(decode(&[0x30, 5, 0, 9], v), Err(DecodeError::Truncated));
}

/// A cheap in-tree stand-in for the fuzz target: random and mutated packets never panic.
#[test]
fn random_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut valid = BytesMut::new();
    encode(
        &Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: "t/x".into(),
            pid: 1,
            properties: Properties {
                user: vec![("a".into(), "b".into())],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"p"),
        }),
        Version::V5,
        &mut valid,
    );
    let seeds = [
        encode_connect(&connect(Version::V5)).to_vec(),
        valid.to_vec(),
    ];
    for i in 0..200_000u32 {
        let mut b = seeds[(i % 2) as usize].clone();
        for _ in 0..(next() % 4 + 1) {
            let pos = (next() as usize) % b.len();
            b[pos] = next() as u8;
        }
        if i % 7 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        if let Ok(Framed::Header(f)) = frame(&b, 1 << 20)
            && let Some(pkt) = b.get(..f.total())
        {
            for v in [None, Some(Version::V311), Some(Version::V5)] {
                let _ = decode(pkt, v);
            }
        }
    }
}
