//! How a tree is saved: its nodes as columns of little-endian numbers in base64. A JSON object
//! per node, as trees were saved before, cost about a kilobyte of memory per node while a run
//! saved its model, so a full-depth forest on 500,000 rows (30 million nodes) ran out of memory;
//! packed, a node costs about 40 bytes of text. Both forms load.

use super::{Node, Tree};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The feature of a leaf in the `feature` column.
const LEAF: u32 = u32::MAX;

/// A tree's nodes by column, each column base64 of little-endian numbers.
#[derive(Serialize, Deserialize)]
struct Packed {
    /// Per node, u32: the feature a split tests, or `u32::MAX` for a leaf.
    feature: String,
    /// Per node, f64: a split's threshold (a row goes left when its value is `<=`), 0 for a leaf.
    threshold: String,
    /// Per node, u32 each: a split's children (0 for a leaf).
    left: String,
    right: String,
    /// The leaves' values in node order, `width` f64 each (class probabilities, or one value).
    values: String,
    width: usize,
    importance: Vec<f64>,
}

/// A tree as runs before the packed form saved it: a list of nodes.
#[derive(Deserialize)]
struct Listed {
    nodes: Vec<Node>,
    importance: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Saved {
    Packed(Packed),
    Listed(Listed),
}

fn encode<T: Copy, const N: usize>(
    items: impl Iterator<Item = T>,
    bytes: fn(T) -> [u8; N],
) -> String {
    let raw: Vec<u8> = items.flat_map(bytes).collect();
    STANDARD.encode(raw)
}

fn decode<T, const N: usize>(
    text: &str,
    column: &str,
    from: fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    let raw = STANDARD
        .decode(text)
        .map_err(|e| format!("saved tree column `{column}`: {e}"))?;
    if raw.len() % N != 0 {
        return Err(format!(
            "saved tree column `{column}`: {} bytes is not a whole number of values",
            raw.len()
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            from(b)
        })
        .collect())
}

impl Packed {
    fn of(tree: &Tree) -> Packed {
        let split = |n: &Node| match n {
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => Some((*feature as u32, *threshold, *left as u32, *right as u32)),
            Node::Leaf(_) => None,
        };
        let nodes = &tree.nodes;
        let width = nodes
            .iter()
            .find_map(|n| match n {
                Node::Leaf(v) => Some(v.len()),
                Node::Split { .. } => None,
            })
            .unwrap_or(0);
        let leaf_values = nodes.iter().flat_map(|n| match n {
            Node::Leaf(v) => v.as_slice(),
            Node::Split { .. } => &[],
        });
        Packed {
            feature: encode(
                nodes.iter().map(|n| split(n).map_or(LEAF, |s| s.0)),
                u32::to_le_bytes,
            ),
            threshold: encode(
                nodes.iter().map(|n| split(n).map_or(0.0, |s| s.1)),
                f64::to_le_bytes,
            ),
            left: encode(
                nodes.iter().map(|n| split(n).map_or(0, |s| s.2)),
                u32::to_le_bytes,
            ),
            right: encode(
                nodes.iter().map(|n| split(n).map_or(0, |s| s.3)),
                u32::to_le_bytes,
            ),
            values: encode(leaf_values.copied(), f64::to_le_bytes),
            width,
            importance: tree.importance.clone(),
        }
    }

    fn unpack(self) -> Result<Tree, String> {
        let feature = decode(&self.feature, "feature", u32::from_le_bytes)?;
        let threshold = decode(&self.threshold, "threshold", f64::from_le_bytes)?;
        let left = decode(&self.left, "left", u32::from_le_bytes)?;
        let right = decode(&self.right, "right", u32::from_le_bytes)?;
        let values = decode(&self.values, "values", f64::from_le_bytes)?;
        let n = feature.len();
        let leaves = feature.iter().filter(|f| **f == LEAF).count();
        if [threshold.len(), left.len(), right.len()] != [n; 3]
            || values.len() != leaves * self.width
        {
            return Err("saved tree: its columns have different lengths".into());
        }
        let mut leaf_values = values.chunks_exact(self.width.max(1));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(if feature[i] == LEAF {
                Node::Leaf(leaf_values.next().map(<[f64]>::to_vec).unwrap_or_default())
            } else {
                let (l, r) = (left[i] as usize, right[i] as usize);
                if l >= n || r >= n {
                    return Err(format!("saved tree: node {i} points past its {n} nodes"));
                }
                Node::Split {
                    feature: feature[i] as usize,
                    threshold: threshold[i],
                    left: l,
                    right: r,
                }
            });
        }
        Ok(Tree {
            nodes,
            importance: self.importance,
        })
    }
}

impl Serialize for Tree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Packed::of(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        match Saved::deserialize(d)? {
            Saved::Packed(p) => p.unpack().map_err(D::Error::custom),
            Saved::Listed(l) => Ok(Tree {
                nodes: l.nodes,
                importance: l.importance,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        Tree {
            nodes: vec![
                Node::Split {
                    feature: 2,
                    threshold: 0.1 + 0.2,
                    left: 1,
                    right: 2,
                },
                Node::Leaf(vec![0.25, 0.75]),
                Node::Leaf(vec![1.0 / 3.0, 2.0 / 3.0]),
            ],
            importance: vec![0.0, 0.0, 1.5],
        }
    }

    #[test]
    fn a_packed_tree_loads_back_to_the_last_bit() {
        let tree = sample();
        let text = serde_json::to_string(&tree).unwrap();
        assert!(!text.contains("Split"), "{text}");
        let back: Tree = serde_json::from_str(&text).unwrap();
        assert_eq!(format!("{:?}", back.nodes), format!("{:?}", tree.nodes));
        assert_eq!(back.importance, tree.importance);
    }

    #[test]
    fn a_tree_saved_as_a_node_list_still_loads() {
        let listed = r#"{"nodes":[{"Split":{"feature":2,"threshold":0.30000000000000004,"left":1,"right":2}},
            {"Leaf":[0.25,0.75]},{"Leaf":[0.3333333333333333,0.6666666666666666]}],"importance":[0.0,0.0,1.5]}"#;
        let back: Tree = serde_json::from_str(listed).unwrap();
        assert_eq!(format!("{:?}", back.nodes), format!("{:?}", sample().nodes));
    }

    #[test]
    fn a_damaged_column_is_an_error_not_a_panic() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["left"] = serde_json::json!(STANDARD.encode([9u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        let e = serde_json::from_value::<Tree>(v).err().unwrap().to_string();
        assert!(e.contains("points past"), "{e}");
    }
}
