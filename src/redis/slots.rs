//! Keys to slots (CRC16/XMODEM of the hash tag, mod 16384) and the slot map learnt from
//! `CLUSTER SLOTS`.

use std::cell::OnceCell;
use std::rc::Rc;

use super::resp::Value;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;
/// "No master known" in the slot table.
const NONE: u16 = u16::MAX;

/// CRC16/XMODEM (poly 0x1021, init 0, no reflection), the table built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)])
}

/// The part of a key that is hashed: the text between the first `{` and the first `}` after it,
/// when that is not empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key) {
        if let Some(len) = memchr::memchr(b'}', &key[open + 1..]) {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of a key.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

thread_local! {
    /// For each slot, the smallest n whose tag `f<n>` hashes to it: fence keys for any master.
    static FENCE_TAGS: OnceCell<Box<[u32]>> = const { OnceCell::new() };
}

fn fence_tag(n: u32, buf: &mut itoa::Buffer) -> Vec<u8> {
    [b"f".as_slice(), buf.format(n).as_bytes()].concat()
}

/// A key in `slot`, for the replication fence: `marconi:fence:{f<n>}`.
pub fn fence_key(slot: u16) -> Vec<u8> {
    let n = FENCE_TAGS.with(|cell| {
        let table = cell.get_or_init(|| {
            let mut table = vec![u32::MAX; SLOTS].into_boxed_slice();
            let (mut left, mut n, mut buf) = (SLOTS, 0u32, itoa::Buffer::new());
            // About 170 000 tries cover every slot (coupon collector); each is one short CRC.
            while left > 0 && n < u32::MAX {
                let slot = usize::from(crc16(&fence_tag(n, &mut buf)) & (SLOTS as u16 - 1));
                if table[slot] == u32::MAX {
                    table[slot] = n;
                    left -= 1;
                }
                n += 1;
            }
            table
        });
        table.get(usize::from(slot)).copied().unwrap_or(0)
    });
    let tag = fence_tag(n, &mut itoa::Buffer::new());
    [b"marconi:fence:{".as_slice(), &tag, b"}"].concat()
}

/// One master and its replicas, as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: Rc<str>,
    pub replicas: Vec<Rc<str>>,
}

/// Which master serves each slot.
#[derive(Debug, Clone)]
pub struct Topology {
    slots: Box<[u16]>,
    pub shards: Vec<Shard>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology { slots: vec![NONE; SLOTS].into_boxed_slice(), shards: Vec::new() }
    }
}

impl Topology {
    /// Reads a `CLUSTER SLOTS` reply. `asked_host` stands in for an empty or unknown (`?`)
    /// endpoint, which means "the host you asked".
    pub fn from_cluster_slots(reply: &Value, asked_host: &str) -> Result<Topology, String> {
        let ranges = reply.as_array().ok_or_else(|| format!("CLUSTER SLOTS answered {reply}"))?;
        let mut topology = Topology::default();
        for range in ranges {
            let bad = || format!("a bad CLUSTER SLOTS entry: {range}");
            let fields = range.as_array().ok_or_else(bad)?;
            let (start, end) = match (fields.first().and_then(Value::as_int), fields.get(1).and_then(Value::as_int)) {
                (Some(s), Some(e)) if 0 <= s && s <= e && e < SLOTS as i64 => (s as usize, e as usize),
                _ => return Err(bad()),
            };
            let mut nodes = fields.get(2..).unwrap_or_default().iter().map(|n| endpoint(n, asked_host));
            let master = nodes.next().flatten().ok_or_else(bad)?;
            let index = topology.shard_index(&master);
            for replica in nodes.flatten() {
                let shard = &mut topology.shards[index];
                if !shard.replicas.contains(&replica) {
                    shard.replicas.push(replica);
                }
            }
            let index = u16::try_from(index).map_err(|_| bad())?;
            topology.slots[start..=end].fill(index);
        }
        if topology.shards.is_empty() {
            return Err("the node serves no slots (not part of a cluster yet?)".into());
        }
        Ok(topology)
    }

    /// Reads a `CLUSTER SHARDS` reply (Redis 7.0+): unlike `CLUSTER SLOTS`, it lists replicas
    /// that have not replicated anything yet. Failed nodes are left out.
    pub fn from_cluster_shards(reply: &Value, asked_host: &str) -> Result<Topology, String> {
        let shards = reply.as_array().ok_or_else(|| format!("CLUSTER SHARDS answered {reply}"))?;
        let mut topology = Topology::default();
        for shard in shards {
            let bad = || format!("a bad CLUSTER SHARDS entry: {shard}");
            let fields = shard.as_array().ok_or_else(bad)?;
            let ranges = field(fields, "slots").and_then(Value::as_array).ok_or_else(bad)?;
            let nodes = field(fields, "nodes").and_then(Value::as_array).ok_or_else(bad)?;
            let mut master = None;
            let mut replicas = Vec::new();
            for node in nodes {
                let node = node.as_array().ok_or_else(bad)?;
                if field(node, "health").and_then(Value::as_bytes) == Some(b"failed") {
                    continue;
                }
                let Some(addr) = shard_endpoint(node, asked_host) else { continue };
                match field(node, "role").and_then(Value::as_bytes) {
                    Some(b"master") => master = Some(addr),
                    _ => replicas.push(addr),
                }
            }
            let Some(master) = master else { continue };
            if ranges.is_empty() {
                continue;
            }
            let index = topology.shard_index(&master);
            for replica in replicas {
                if !topology.shards[index].replicas.contains(&replica) {
                    topology.shards[index].replicas.push(replica);
                }
            }
            let index = u16::try_from(index).map_err(|_| bad())?;
            for pair in ranges.chunks(2) {
                match (pair.first().and_then(Value::as_int), pair.get(1).and_then(Value::as_int)) {
                    (Some(s), Some(e)) if 0 <= s && s <= e && e < SLOTS as i64 => {
                        topology.slots[s as usize..=e as usize].fill(index)
                    }
                    _ => return Err(bad()),
                }
            }
        }
        if topology.shards.is_empty() {
            return Err("the node serves no slots (not part of a cluster yet?)".into());
        }
        Ok(topology)
    }

    fn shard_index(&mut self, master: &Rc<str>) -> usize {
        match self.shards.iter().position(|s| s.master == *master) {
            Some(i) => i,
            None => {
                self.shards.push(Shard { master: master.clone(), replicas: Vec::new() });
                self.shards.len() - 1
            }
        }
    }

    pub fn master_of(&self, slot: u16) -> Option<&Rc<str>> {
        let index = *self.slots.get(usize::from(slot))?;
        self.shards.get(usize::from(index)).map(|s| &s.master)
    }

    /// Records a `MOVED`: `slot` is now served by `master`.
    pub fn set_slot(&mut self, slot: u16, master: &Rc<str>) {
        let index = self.shard_index(master);
        if let (Some(entry), Ok(index)) = (self.slots.get_mut(usize::from(slot)), u16::try_from(index)) {
            *entry = index;
        }
    }

    /// Slots each shard serves, in the order of `shards`.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.shards.len()];
        for &s in self.slots.iter() {
            if let Some(c) = counts.get_mut(usize::from(s)) {
                *c += 1;
            }
        }
        counts
    }

    /// The first slot each shard serves (`None` for a master without slots).
    pub fn first_slots(&self) -> Vec<Option<u16>> {
        let mut first = vec![None; self.shards.len()];
        for (slot, &s) in self.slots.iter().enumerate() {
            if let Some(f @ None) = first.get_mut(usize::from(s)) {
                *f = Some(slot as u16);
            }
        }
        first
    }

    /// Masters then replicas, each once.
    pub fn nodes(&self) -> Vec<Rc<str>> {
        let mut all: Vec<Rc<str>> = self.shards.iter().map(|s| s.master.clone()).collect();
        for shard in &self.shards {
            for r in &shard.replicas {
                if !all.contains(r) {
                    all.push(r.clone());
                }
            }
        }
        all
    }
}

/// `host:port` of a node entry `[host, port, id, …]`; `None` for a node without a usable port.
fn endpoint(node: &Value, asked_host: &str) -> Option<Rc<str>> {
    let fields = node.as_array()?;
    let host = fields.first()?.as_bytes()?;
    let port = fields.get(1)?.as_int().filter(|p| (1..=65535).contains(p))?;
    let host = match std::str::from_utf8(host).ok()? {
        "" | "?" => asked_host,
        h => h,
    };
    Some(join_host_port(host, port as u16).into())
}

/// The value after `name` in a RESP2 map (a flat array of names and values).
fn field<'a>(map: &'a [Value], name: &str) -> Option<&'a Value> {
    map.chunks(2).find(|kv| kv.first().and_then(Value::as_bytes) == Some(name.as_bytes())).and_then(|kv| kv.get(1))
}

/// `host:port` of a `CLUSTER SHARDS` node: its preferred endpoint, else its IP.
fn shard_endpoint(node: &[Value], asked_host: &str) -> Option<Rc<str>> {
    let port = field(node, "port")?.as_int().filter(|p| (1..=65535).contains(p))?;
    let host = [field(node, "endpoint"), field(node, "ip")]
        .into_iter()
        .flatten()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()?).ok())
        .find(|h| !h.is_empty() && *h != "?")
        .unwrap_or(asked_host);
    Some(join_host_port(host, port as u16).into())
}

/// `host:port`, with brackets around an IPv6 address.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host part of `host:port` (without IPv6 brackets).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_and_known_slots() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 0x3FFF, "an empty tag hashes the whole key");
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"), "the tag runs to the first closing brace");
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"a}b{c"), b"a}b{c");
    }

    #[test]
    fn fence_keys_fall_in_their_slot() {
        for slot in [0u16, 1, 5460, 5461, 10922, 16383] {
            assert_eq!(key_slot(&fence_key(slot)), slot);
        }
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Bulk(host.into()),
            Value::Int(port),
            Value::Bulk(b"id".to_vec()),
            Value::Array(vec![]),
        ])
    }

    #[test]
    fn reads_cluster_slots() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("", 7001)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("::1", 7002), node("?", 7004)]),
        ]);
        let mut t = Topology::from_cluster_slots(&reply, "10.0.0.9").expect("parses");
        assert_eq!(t.master_of(0).map(|m| &**m), Some("127.0.0.1:7000"));
        assert_eq!(t.master_of(5461).map(|m| &**m), Some("10.0.0.9:7001"));
        assert_eq!(t.master_of(16383).map(|m| &**m), Some("[::1]:7002"));
        assert_eq!(t.shards[2].replicas, vec![Rc::from("10.0.0.9:7004")]);
        assert_eq!(t.slot_counts(), vec![5461, 5462, 5461]);
        assert_eq!(t.first_slots(), vec![Some(0), Some(5461), Some(10923)]);
        t.set_slot(1, &Rc::from("127.0.0.1:7009"));
        assert_eq!(t.master_of(1).map(|m| &**m), Some("127.0.0.1:7009"));
        assert_eq!(t.nodes().len(), 6);
        assert_eq!(host_of("[::1]:7002"), "::1");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
    }

    fn shard_node(host: &str, port: i64, role: &str, health: &str) -> Value {
        let kv = |k: &str, v: Value| [Value::Bulk(k.into()), v];
        Value::Array(
            [
                kv("id", Value::Bulk(b"x".to_vec())),
                kv("port", Value::Int(port)),
                kv("ip", Value::Bulk(host.into())),
                kv("endpoint", Value::Bulk(host.into())),
                kv("role", Value::Bulk(role.into())),
                kv("replication-offset", Value::Int(0)),
                kv("health", Value::Bulk(health.into())),
            ]
            .concat(),
        )
    }

    #[test]
    fn reads_cluster_shards() {
        let shard = |slots: Vec<i64>, nodes: Vec<Value>| {
            Value::Array(vec![
                Value::Bulk(b"slots".to_vec()),
                Value::Array(slots.into_iter().map(Value::Int).collect()),
                Value::Bulk(b"nodes".to_vec()),
                Value::Array(nodes),
            ])
        };
        let reply = Value::Array(vec![
            shard(
                vec![0, 99, 200, 5460],
                vec![
                    shard_node("127.0.0.1", 7000, "master", "online"),
                    shard_node("127.0.0.1", 7003, "replica", "online"),
                ],
            ),
            shard(
                vec![100, 199, 5461, 16383],
                vec![shard_node("127.0.0.1", 7004, "replica", "loading"), shard_node("", 7001, "master", "online")],
            ),
            // A failed old master without slots, and a failed replica: left out.
            shard(vec![], vec![shard_node("127.0.0.1", 7002, "master", "failed")]),
        ]);
        let mut reply = reply;
        if let Value::Array(shards) = &mut reply {
            if let Some(Value::Array(fields)) = shards.get_mut(1) {
                if let Some(Value::Array(nodes)) = fields.get_mut(3) {
                    nodes.push(shard_node("127.0.0.1", 7005, "replica", "failed"));
                }
            }
        }
        let t = Topology::from_cluster_shards(&reply, "10.0.0.1").expect("parses");
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.master_of(150).map(|m| &**m), Some("10.0.0.1:7001"));
        assert_eq!(t.master_of(300).map(|m| &**m), Some("127.0.0.1:7000"));
        assert_eq!(t.shards[0].replicas, vec![Rc::from("127.0.0.1:7003")]);
        assert_eq!(t.shards[1].replicas, vec![Rc::from("127.0.0.1:7004")]);
        assert_eq!(t.slot_counts(), vec![5361, 16384 - 5361]);
        assert!(Topology::from_cluster_shards(&Value::Array(vec![]), "h").is_err());
        let odd = Value::Array(vec![shard(vec![0, 16384], vec![shard_node("h", 1, "master", "online")])]);
        assert!(Topology::from_cluster_shards(&odd, "h").is_err());
    }

    #[test]
    fn refuses_bad_cluster_slots() {
        for bad in [
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![Value::Array(vec![Value::Int(5), Value::Int(1), node("h", 1)])]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(16384), node("h", 1)])]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1), node("h", 0)])]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
        ] {
            assert!(Topology::from_cluster_slots(&bad, "h").is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_tag_decides_the_slot(tag in "[a-z0-9/]{1,12}", a in "[a-z:]{0,8}", b in "[a-z:]{0,8}") {
            let key = format!("{a}{{{tag}}}{b}");
            prop_assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
            prop_assert!(usize::from(key_slot(key.as_bytes())) < SLOTS);
        }
    }
}
