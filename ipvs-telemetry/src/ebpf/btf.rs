//! A small reader of the kernel's BTF (`/sys/kernel/btf/*`): enough to find a struct by name and
//! the byte offset of a member path such as `ns.inum`. Module BTF is split BTF: its type ids
//! continue after the base (vmlinux) ids and its string offsets after the base string section.
//!
//! Format: `Documentation/bpf/btf.rst` in the kernel tree.

use thiserror::Error;

/// Why BTF could not be read or a member not found.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    /// The data is not BTF or is cut short.
    #[error("malformed btf: {0}")]
    Malformed(&'static str),
    /// A type kind this reader does not know (the size of its extra data is unknown).
    #[error("malformed btf: unknown type kind {0}")]
    UnknownKind(u32),
    /// No struct of that name.
    #[error("btf has no struct {0}")]
    NoStruct(String),
    /// The struct has no such member.
    #[error("struct {strukt} has no member {member}")]
    NoMember {
        /// The struct searched.
        strukt: String,
        /// The missing member path.
        member: String,
    },
    /// The member is a bitfield or not byte aligned.
    #[error("member {0} is not byte aligned")]
    Bitfield(String),
    /// No function of that name (or its prototype is missing).
    #[error("btf has no function {0}")]
    NoFunction(String),
}

/// Why the running kernel's BTF (`/sys/kernel/btf/*`) could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A BTF file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not BTF this reader understands, or lacks a type the probes need.
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// Reads the BTF file `dir/name` (`vmlinux`, or a module name for its split BTF).
pub fn read_file(dir: &std::path::Path, name: &str) -> Result<Vec<u8>, LoadError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| LoadError::Read { path, source })
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One parsed BTF blob: raw bytes plus the position of each type record.
#[derive(Debug)]
struct Layer {
    data: Vec<u8>,
    /// Start of the type section within `data`.
    types_start: usize,
    /// Start and length of the string section within `data`.
    strings: (usize, usize),
    /// Offset within `data` of each type record, id `first_id + index`.
    records: Vec<usize>,
    /// Id of the first record (1 for base BTF).
    first_id: u32,
    /// String offsets below this belong to the base.
    first_str: u32,
}

/// BTF of the kernel, optionally with one module's split BTF on top.
#[derive(Debug)]
pub struct Btf {
    layers: Vec<Layer>,
}

/// A struct member: byte offset from the start of the struct and its type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset.
    pub offset: u32,
    /// Type id of the member.
    pub type_id: u32,
}

fn u16_at(d: &[u8], at: usize) -> Result<u16, BtfError> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Layer {
    fn parse(data: Vec<u8>, first_id: u32, first_str: u32) -> Result<Layer, BtfError> {
        if u16_at(&data, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian btf)"));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len
            .checked_add(type_off)
            .ok_or(BtfError::Malformed("bad header"))?;
        let types_end = types_start
            .checked_add(type_len)
            .ok_or(BtfError::Malformed("bad header"))?;
        let strings_start = hdr_len
            .checked_add(str_off)
            .ok_or(BtfError::Malformed("bad header"))?;
        if types_end > data.len() || strings_start.saturating_add(str_len) > data.len() {
            return Err(BtfError::Malformed("sections beyond the end"));
        }
        let mut records = Vec::new();
        let mut at = types_start;
        while at < types_end {
            records.push(at);
            let info = u32_at(&data, at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let extra = match kind {
                KIND_INT => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => 12 * vlen,
                KIND_ENUM => 8 * vlen,
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_VAR => 4,
                KIND_DATASEC => 12 * vlen,
                KIND_DECL_TAG => 4,
                KIND_ENUM64 => 12 * vlen,
                k => return Err(BtfError::UnknownKind(k)),
            };
            at += 12 + extra;
        }
        if at != types_end {
            return Err(BtfError::Malformed("type section does not end on a record"));
        }
        Ok(Layer {
            data,
            types_start,
            strings: (strings_start, str_len),
            records,
            first_id,
            first_str,
        })
    }

    fn next_id(&self) -> u32 {
        self.first_id + self.records.len() as u32
    }

    fn next_str(&self) -> u32 {
        self.first_str + self.strings.1 as u32
    }
}

/// A type record, decoded.
#[derive(Debug, Clone, Copy)]
struct Record<'a> {
    kind: u32,
    vlen: usize,
    kflag: bool,
    name_off: u32,
    size_or_type: u32,
    /// The bytes after the 12-byte header (members for structs).
    extra: &'a [u8],
}

impl Btf {
    /// Parses base BTF such as `/sys/kernel/btf/vmlinux`.
    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        Ok(Btf {
            layers: vec![Layer::parse(data, 1, 0)?],
        })
    }

    /// Adds split BTF (a module's, e.g. `/sys/kernel/btf/ip_vs`) on top of this one.
    pub fn add_split(&mut self, data: Vec<u8>) -> Result<(), BtfError> {
        let (id, s) = match self.layers.last() {
            Some(l) => (l.next_id(), l.next_str()),
            None => (1, 0),
        };
        self.layers.push(Layer::parse(data, id, s)?);
        Ok(())
    }

    /// Number of type ids, counting the implicit `void` (id 0).
    pub fn type_count(&self) -> u32 {
        self.layers.last().map_or(1, Layer::next_id)
    }

    fn record(&self, id: u32) -> Option<Record<'_>> {
        let layer = self
            .layers
            .iter()
            .rev()
            .find(|l| id >= l.first_id && id < l.next_id())?;
        let at = *layer.records.get((id - layer.first_id) as usize)?;
        let d = &layer.data;
        let info = u32_at(d, at + 4).ok()?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra_len = match kind {
            KIND_STRUCT | KIND_UNION => 12 * vlen,
            KIND_FUNC_PROTO => 8 * vlen,
            _ => 0,
        };
        debug_assert!(at >= layer.types_start);
        Some(Record {
            kind,
            vlen,
            kflag: info >> 31 == 1,
            name_off: u32_at(d, at).ok()?,
            size_or_type: u32_at(d, at + 8).ok()?,
            extra: d.get(at + 12..at + 12 + extra_len)?,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let Some(layer) = self
            .layers
            .iter()
            .rev()
            .find(|l| off >= l.first_str && off < l.next_str())
        else {
            return b"";
        };
        let (start, len) = layer.strings;
        let rel = (off - layer.first_str) as usize;
        let s = &layer.data[start + rel..start + len];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// The id of the struct named `name` that has members (not a forward declaration).
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        for layer in self.layers.iter().rev() {
            for i in 0..layer.records.len() {
                let id = layer.first_id + i as u32;
                if let Some(r) = self.record(id)
                    && r.kind == KIND_STRUCT
                    && r.vlen > 0
                    && self.name(r.name_off) == name.as_bytes()
                {
                    return Ok(id);
                }
            }
        }
        Err(BtfError::NoStruct(name.into()))
    }

    /// Parameter names, in order, of the function `name` (its `FUNC` record's `FUNC_PROTO`),
    /// searching the module layer first. Unnamed parameters are empty strings.
    pub fn function_params(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let missing = || BtfError::NoFunction(name.into());
        for layer in self.layers.iter().rev() {
            for i in 0..layer.records.len() {
                let id = layer.first_id + i as u32;
                let Some(r) = self.record(id) else { continue };
                if r.kind != KIND_FUNC || self.name(r.name_off) != name.as_bytes() {
                    continue;
                }
                let proto = self.record(r.size_or_type).ok_or_else(missing)?;
                if proto.kind != KIND_FUNC_PROTO {
                    return Err(missing());
                }
                return Ok(proto
                    .extra
                    .chunks_exact(8)
                    .map(|p| {
                        let off = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                        String::from_utf8_lossy(self.name(off)).into_owned()
                    })
                    .collect());
            }
        }
        Err(missing())
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.record(id) {
                Some(r)
                    if matches!(
                        r.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = r.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Finds a direct member of struct/union `id` by name, looking through anonymous
    /// structs and unions.
    fn member(&self, id: u32, name: &str) -> Result<Option<Member>, BtfError> {
        let Some(r) = self.record(self.resolve(id)) else {
            return Ok(None);
        };
        if r.kind != KIND_STRUCT && r.kind != KIND_UNION {
            return Ok(None);
        }
        for m in r.extra.chunks_exact(12) {
            let m_name = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
            let m_type = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
            let raw = u32::from_le_bytes([m[8], m[9], m[10], m[11]]);
            let (bits, bitfield) = if r.kflag {
                (raw & 0x00ff_ffff, raw >> 24 != 0)
            } else {
                (raw, false)
            };
            let found = if m_name == 0 {
                self.member(m_type, name)?.map(|inner| Member {
                    offset: inner.offset + bits / 8,
                    type_id: inner.type_id,
                })
            } else if self.name(m_name) == name.as_bytes() {
                if bitfield || bits % 8 != 0 {
                    return Err(BtfError::Bitfield(name.into()));
                }
                Some(Member {
                    offset: bits / 8,
                    type_id: m_type,
                })
            } else {
                None
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Byte offset of a dotted member path (`"ns.inum"`) inside struct `strukt`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self.struct_id(strukt)?;
        let mut offset = 0;
        for part in path.split('.') {
            let m = self.member(id, part)?.ok_or_else(|| BtfError::NoMember {
                strukt: strukt.into(),
                member: path.into(),
            })?;
            offset += m.offset;
            id = m.type_id;
        }
        Ok(offset)
    }

    /// Size in bytes of the (resolved) type of member `path` in `strukt`; `None` for kinds
    /// without a size (pointers are 8 on the 64-bit targets this runs on).
    pub fn member_size(&self, strukt: &str, path: &str) -> Result<Option<u32>, BtfError> {
        let mut id = self.struct_id(strukt)?;
        for part in path.split('.') {
            id = self
                .member(id, part)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: path.into(),
                })?
                .type_id;
        }
        Ok(self.record(self.resolve(id)).and_then(|r| match r.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(r.size_or_type)
            }
            KIND_PTR => Some(8),
            _ => None,
        }))
    }
}

/// Test fixtures: the kernel's BTF cut down to what a test reads, with the same type ids and
/// string offsets (split module BTF refers to both), so that it compresses to a few kilobytes.
#[cfg(test)]
pub(crate) mod minimize {
    use std::collections::BTreeSet;

    use super::*;

    /// Every layer of `btf` (base first) keeping only the structs `structs` (with the types of
    /// their members, and anonymous member structs and unions whole) and the functions `funcs`
    /// (with their prototypes). Every other type becomes a nameless 0-byte `int`, and every
    /// string not named by a kept type becomes zeros.
    pub(crate) fn minimized(btf: &Btf, structs: &[&str], funcs: &[&str]) -> Vec<Vec<u8>> {
        let mut keep = BTreeSet::new();
        let mut names = BTreeSet::new();
        for s in structs {
            let id = btf.struct_id(s).unwrap();
            keep_struct(btf, id, &mut keep, &mut names);
        }
        for f in funcs {
            let id = (1..btf.type_count())
                .find(|&id| {
                    btf.record(id).is_some_and(|r| {
                        r.kind == KIND_FUNC && btf.name(r.name_off) == f.as_bytes()
                    })
                })
                .unwrap_or_else(|| panic!("no function {f}"));
            let r = btf.record(id).unwrap();
            keep.insert(id);
            names.insert(r.name_off);
            keep.insert(r.size_or_type);
            let proto = btf.record(r.size_or_type).unwrap();
            for p in proto.extra.chunks_exact(8) {
                names.insert(u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
            }
        }
        btf.layers
            .iter()
            .map(|l| {
                let d = &l.data;
                let hdr_len = u32_at(d, 4).unwrap() as usize;
                let types_end = l.types_start + u32_at(d, 12).unwrap() as usize;
                let mut types = Vec::new();
                for (i, &at) in l.records.iter().enumerate() {
                    let end = l.records.get(i + 1).copied().unwrap_or(types_end);
                    if keep.contains(&(l.first_id + i as u32)) {
                        types.extend_from_slice(&d[at..end]);
                    } else {
                        types.extend_from_slice(&[0, 0, 0, 0]);
                        types.extend_from_slice(&(KIND_INT << 24).to_le_bytes());
                        types.extend_from_slice(&[0; 8]);
                    }
                }
                let (start, len) = l.strings;
                let mut strings = vec![0u8; len];
                for &off in names.range(l.first_str..l.next_str()) {
                    let rel = (off - l.first_str) as usize;
                    let s = &d[start + rel..start + len];
                    let n = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                    strings[rel..rel + n].copy_from_slice(&s[..n]);
                }
                let mut out = d[..hdr_len].to_vec();
                out[8..12].copy_from_slice(&0u32.to_le_bytes());
                out[12..16].copy_from_slice(&(types.len() as u32).to_le_bytes());
                out[16..20].copy_from_slice(&(types.len() as u32).to_le_bytes());
                out[20..24].copy_from_slice(&(len as u32).to_le_bytes());
                out.extend_from_slice(&types);
                out.extend_from_slice(&strings);
                out
            })
            .collect()
    }

    fn keep_struct(btf: &Btf, id: u32, keep: &mut BTreeSet<u32>, names: &mut BTreeSet<u32>) {
        let r = btf.record(id).unwrap();
        keep.insert(id);
        names.insert(r.name_off);
        for m in r.extra.chunks_exact(12) {
            let m_name = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
            let mut ty = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
            names.insert(m_name);
            // The member's type and its qualifiers/typedefs, as member_size reads them.
            for _ in 0..32 {
                let Some(t) = btf.record(ty) else { break };
                if keep.contains(&ty) {
                    break;
                }
                if (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && t.name_off == 0 {
                    keep_struct(btf, ty, keep, names);
                    break;
                }
                keep.insert(ty);
                names.insert(t.name_off);
                if !matches!(
                    t.kind,
                    KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                ) {
                    break;
                }
                ty = t.size_or_type;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF from type records and a string table.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.extend_from_slice(&[1, 0]);
        d.extend_from_slice(&24u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&(types.len() as u32).to_le_bytes());
        d.extend_from_slice(&(types.len() as u32).to_le_bytes());
        d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        d.extend_from_slice(types);
        d.extend_from_slice(strings);
        d
    }

    fn rec(out: &mut Vec<u8>, name: u32, kind: u32, vlen: u32, kflag: bool, st: u32) {
        out.extend_from_slice(&name.to_le_bytes());
        let info = (kind << 24) | vlen | if kflag { 1 << 31 } else { 0 };
        out.extend_from_slice(&info.to_le_bytes());
        out.extend_from_slice(&st.to_le_bytes());
    }

    fn mem(out: &mut Vec<u8>, name: u32, ty: u32, off: u32) {
        for v in [name, ty, off] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    // Strings: 0 "", 1 "int", 5 "inner", 11 "x", 13 "outer", 19 "a", 21 "in"
    const STRINGS: &[u8] = b"\0int\0inner\0x\0outer\0a\0in\0";

    fn base() -> Btf {
        let mut t = Vec::new();
        rec(&mut t, 1, KIND_INT, 0, false, 4); // 1: int
        t.extend_from_slice(&0x20u32.to_le_bytes());
        rec(&mut t, 5, KIND_STRUCT, 2, false, 8); // 2: struct inner { int a; int x; }
        mem(&mut t, 19, 1, 0);
        mem(&mut t, 11, 1, 32);
        rec(&mut t, 0, KIND_CONST, 0, false, 2); // 3: const struct inner
        rec(&mut t, 0, KIND_UNION, 1, false, 8); // 4: union { const struct inner in; }
        mem(&mut t, 21, 3, 0);
        rec(&mut t, 13, KIND_STRUCT, 2, true, 24); // 5: struct outer { int a:3; <anon> @64 }
        mem(&mut t, 19, 1, 3 << 24);
        mem(&mut t, 0, 4, 64);
        Btf::parse(blob(&t, STRINGS)).unwrap()
    }

    #[test]
    fn finds_nested_members_through_anonymous_unions_and_qualifiers() {
        let btf = base();
        assert_eq!(btf.type_count(), 6);
        assert_eq!(btf.struct_id("outer").unwrap(), 5);
        assert_eq!(btf.offset_of("outer", "in.x").unwrap(), 12);
        assert_eq!(btf.offset_of("inner", "x").unwrap(), 4);
        assert_eq!(btf.member_size("outer", "in.x").unwrap(), Some(4));
        assert_eq!(
            btf.offset_of("outer", "a"),
            Err(BtfError::Bitfield("a".into()))
        );
        assert_eq!(
            btf.offset_of("outer", "nope"),
            Err(BtfError::NoMember {
                strukt: "outer".into(),
                member: "nope".into()
            })
        );
        assert_eq!(
            btf.offset_of("missing", "a"),
            Err(BtfError::NoStruct("missing".into()))
        );
    }

    #[test]
    fn split_btf_continues_ids_and_strings_of_the_base() {
        let mut btf = base();
        assert_eq!(STRINGS.len(), 24);
        // Split strings start at the base length (24): 24 "" 25 "mod" 29 "p"
        let mut t = Vec::new();
        rec(&mut t, 0, KIND_PTR, 0, false, 5); // 6: struct outer *
        rec(&mut t, 25, KIND_STRUCT, 2, false, 16); // 7: struct mod { struct outer *p; int x; }
        mem(&mut t, 29, 6, 0);
        mem(&mut t, 11, 1, 64);
        btf.add_split(blob(&t, b"\0mod\0p\0")).unwrap();
        assert_eq!(btf.struct_id("mod").unwrap(), 7);
        assert_eq!(btf.offset_of("mod", "x").unwrap(), 8);
        assert_eq!(btf.member_size("mod", "p").unwrap(), Some(8));
    }

    #[test]
    fn function_parameters_in_order_from_split_btf() {
        let mut btf = base();
        // Split strings from 24: 24 "" 25 "cp" 28 "direction" 38 "f"
        let mut t = Vec::new();
        rec(&mut t, 0, KIND_PTR, 0, false, 5); // 6: struct outer *
        rec(&mut t, 0, KIND_FUNC_PROTO, 2, false, 0); // 7: void (struct outer *cp, int direction)
        for (name, ty) in [(25u32, 6u32), (28, 1)] {
            t.extend_from_slice(&name.to_le_bytes());
            t.extend_from_slice(&ty.to_le_bytes());
        }
        rec(&mut t, 38, KIND_FUNC, 0, false, 7); // 8: f
        btf.add_split(blob(&t, b"\0cp\0direction\0f\0")).unwrap();
        assert_eq!(btf.function_params("f").unwrap(), vec!["cp", "direction"]);
        assert_eq!(
            btf.function_params("g"),
            Err(BtfError::NoFunction("g".into()))
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(vec![]).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut t = Vec::new();
        rec(&mut t, 0, 31, 0, false, 0);
        assert_eq!(
            Btf::parse(blob(&t, b"\0")).unwrap_err(),
            BtfError::UnknownKind(31)
        );
        let mut d = blob(&[], b"\0");
        d[12] = 200; // type_len beyond the end
        assert!(Btf::parse(d).is_err());
    }
}
