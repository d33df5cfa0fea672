//! The few ONNX protobuf messages the exporter writes, encoded by hand, and a graph builder.

// ---------------------------------------------------------------- protobuf

#[derive(Default)]
pub(super) struct Pb(pub(super) Vec<u8>);

impl Pb {
    pub(super) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub(super) fn key(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }
    pub(super) fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    pub(super) fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    pub(super) fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    pub(super) fn msg(&mut self, field: u32, m: &Pb) -> &mut Self {
        self.bytes(field, &m.0)
    }
    pub(super) fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn packed_ints(&mut self, field: u32, vs: &[i64]) -> &mut Self {
        let mut inner = Pb::default();
        for v in vs {
            inner.varint(*v as u64);
        }
        self.bytes(field, &inner.0)
    }
}

// ---------------------------------------------------------------- ONNX messages

pub(super) const FLOAT: i64 = 1;
pub(super) const INT64: i64 = 7;
pub(super) const STRING: i64 = 8;
pub(super) const BOOL: i64 = 9;
pub(super) const DOUBLE: i64 = 11;

pub(super) enum Data<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
    I64(&'a [i64]),
    Str(&'a [String]),
}

pub(super) fn tensor(name: &str, dims: &[i64], data: Data) -> Pb {
    let mut t = Pb::default();
    t.packed_ints(1, dims);
    let raw = |t: &mut Pb, elem: i64, bytes: Vec<u8>| {
        t.int(2, elem);
        t.bytes(9, &bytes);
    };
    match data {
        Data::F64(v) => raw(
            &mut t,
            DOUBLE,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::F32(v) => raw(
            &mut t,
            FLOAT,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => raw(
            &mut t,
            INT64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::Str(v) => {
            t.int(2, STRING);
            for s in v {
                t.str(6, s);
            }
        }
    }
    t.str(8, name);
    t
}

pub(super) enum Attr<'a> {
    Int(&'a str, i64),
    Float(&'a str, f32),
    Str(&'a str, &'a str),
    Ints(&'a str, Vec<i64>),
    Floats(&'a str, Vec<f32>),
    Strs(&'a str, Vec<String>),
    Tensor(&'a str, Pb),
}

pub(super) fn attribute(a: Attr) -> Pb {
    let mut p = Pb::default();
    match a {
        Attr::Int(n, v) => {
            p.str(1, n).int(3, v).int(20, 2);
        }
        Attr::Float(n, v) => {
            p.str(1, n).float(2, v).int(20, 1);
        }
        Attr::Str(n, v) => {
            p.str(1, n).str(4, v).int(20, 3);
        }
        Attr::Ints(n, v) => {
            p.str(1, n).packed_ints(8, &v).int(20, 7);
        }
        Attr::Floats(n, v) => {
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            p.str(1, n).bytes(7, &b).int(20, 6);
        }
        Attr::Strs(n, v) => {
            p.str(1, n);
            for s in &v {
                p.str(9, s);
            }
            p.int(20, 8);
        }
        Attr::Tensor(n, t) => {
            p.str(1, n).msg(5, &t).int(20, 4);
        }
    }
    p
}

/// A value's type: element type and shape ("N" for the batch dimension).
pub(super) fn value_info(name: &str, elem: i64, dims: &[Option<i64>]) -> Pb {
    let mut shape = Pb::default();
    for d in dims {
        let mut dim = Pb::default();
        match d {
            Some(v) => dim.int(1, *v),
            None => dim.str(2, "N"),
        };
        shape.msg(1, &dim);
    }
    let mut tt = Pb::default();
    tt.int(1, elem).msg(2, &shape);
    let mut ty = Pb::default();
    ty.msg(1, &tt);
    let mut vi = Pb::default();
    vi.str(1, name).msg(2, &ty);
    vi
}

#[derive(Default)]
pub(super) struct Graph {
    pub(super) nodes: Vec<Pb>,
    pub(super) inits: Vec<Pb>,
    pub(super) n: usize,
}

impl Graph {
    pub(super) fn fresh(&mut self, stem: &str) -> String {
        self.n += 1;
        format!("{stem}_{}", self.n)
    }
    pub(super) fn init(&mut self, stem: &str, dims: &[i64], data: Data) -> String {
        let name = self.fresh(stem);
        self.inits.push(tensor(&name, dims, data));
        name
    }
    pub(super) fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<Attr>,
    ) {
        let mut p = Pb::default();
        for i in inputs {
            p.str(1, i);
        }
        for o in outputs {
            p.str(2, o);
        }
        p.str(3, &self.fresh(op)).str(4, op);
        for a in attrs {
            p.msg(5, &attribute(a));
        }
        if !domain.is_empty() {
            p.str(7, domain);
        }
        self.nodes.push(p);
    }
    /// One node with one output; returns the output's name.
    pub(super) fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_in("", op, inputs, &[&out], attrs);
        out
    }
}
