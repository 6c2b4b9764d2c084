//! A BERT encoder (all-MiniLM-L6-v2 and kin): token ids in, mean-pooled unit vectors out.
//!
//! Data flow, per chunk of texts (at most [`CHUNK_TOKENS`] tokens, input order kept):
//! ids → word + position embeddings → LayerNorm → N × [fused QKV projection → attention
//! per text and head → output projection → + residual → LayerNorm → FFN (GELU, erf form)
//! → + residual → LayerNorm] → mean over each text's tokens → L2 normalise.
//!
//! Rows stay packed (`tokens × hidden`, real tokens only), so the dense layers of a batch
//! run as one product over every token of every text and mixed lengths cost no padding;
//! only attention looks at text boundaries. The weights arrive already arranged as the
//! numpy path keeps them (`routeguard.embed.bert.BertWeights`: projections `(in, out)`,
//! Q/K/V fused with 1/√head_dim folded into Q, the segment-0 embedding folded into the word
//! table) and the dense ones are packed once by [`Linear::new`]. Everything runs on the
//! calling thread: no thread pool, so a forward pass never competes with the event loop
//! for more than the one core it runs on.

use super::isa::Isa;
use super::linear::{gemm, Linear, Precision};
use super::ops;
use crate::error::{CoreError, CoreResult};

/// Tokens per forward-pass chunk: bounds the scratch memory of a big batch (~40 MB for
/// MiniLM) while keeping the products wide enough to run at full speed.
pub const CHUNK_TOKENS: usize = 4096;

/// Scratch buffers kept per thread between calls, so a short prompt's forward pass does
/// not allocate (and fault in fresh pages) every time. Past [`KEEP_BYTES`] they are freed
/// after the call, so a big batch does not pin tens of MB to every thread that ran one.
#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    y: Vec<f32>,
    wide: Vec<f32>,
    ctx: Vec<f32>,
    scratch: Vec<f32>,
}

/// Scratch a thread keeps between calls (enough for a few hundred MiniLM tokens).
const KEEP_BYTES: usize = 4 << 20;

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::default();
}

impl Workspace {
    /// Make every buffer at least its size for `narrow` (tokens × hidden) and `wide`
    /// (tokens × max(3·hidden, intermediate)) values; every value is overwritten before use.
    fn resize(&mut self, narrow: usize, wide: usize) {
        for (buffer, len) in [
            (&mut self.x, narrow),
            (&mut self.y, narrow),
            (&mut self.ctx, narrow),
            (&mut self.wide, wide),
        ] {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        }
    }

    /// Free the buffers if they grew past [`KEEP_BYTES`].
    fn trim(&mut self) {
        let floats = self.x.len() + self.y.len() + self.ctx.len() + self.wide.len();
        if (floats + self.scratch.capacity()) * 4 > KEEP_BYTES {
            *self = Workspace::default();
        }
    }
}

/// Shape and settings of the encoder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BertConfig {
    /// Width of the hidden states (384 for MiniLM-L6).
    pub hidden: usize,
    /// Attention heads (12); `hidden` must be a multiple.
    pub heads: usize,
    /// Width of the feed-forward layer (1536).
    pub intermediate: usize,
    /// LayerNorm epsilon (1e-12).
    pub eps: f32,
    /// How the dense weights are stored.
    pub precision: Precision,
}

/// One transformer block's weights as plain slices, in `x @ w` layout (`(in, out)`).
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    /// `(hidden, 3·hidden)`; the query third pre-scaled by 1/√head_dim.
    pub qkv_w: &'a [f32],
    /// `3·hidden`.
    pub qkv_b: &'a [f32],
    /// `(hidden, hidden)`.
    pub out_w: &'a [f32],
    /// `hidden`.
    pub out_b: &'a [f32],
    /// LayerNorm after attention: gain.
    pub ln1_g: &'a [f32],
    /// LayerNorm after attention: bias.
    pub ln1_b: &'a [f32],
    /// `(hidden, intermediate)`.
    pub ffn_in_w: &'a [f32],
    /// `intermediate`.
    pub ffn_in_b: &'a [f32],
    /// `(intermediate, hidden)`.
    pub ffn_out_w: &'a [f32],
    /// `hidden`.
    pub ffn_out_b: &'a [f32],
    /// LayerNorm after the FFN: gain.
    pub ln2_g: &'a [f32],
    /// LayerNorm after the FFN: bias.
    pub ln2_b: &'a [f32],
}

impl<'a> LayerWeights<'a> {
    /// Views of one layer's 12 arrays in field order (`qkv_w, qkv_b, out_w, out_b, ln1_g,
    /// ln1_b, ffn_in_w, ffn_in_b, ffn_out_w, ffn_out_b, ln2_g, ln2_b`). Panics with fewer.
    pub fn from_parts(p: &'a [Vec<f32>]) -> Self {
        Self {
            qkv_w: &p[0],
            qkv_b: &p[1],
            out_w: &p[2],
            out_b: &p[3],
            ln1_g: &p[4],
            ln1_b: &p[5],
            ffn_in_w: &p[6],
            ffn_in_b: &p[7],
            ffn_out_w: &p[8],
            ffn_out_b: &p[9],
            ln2_g: &p[10],
            ln2_b: &p[11],
        }
    }
}

struct Layer {
    qkv: Linear,
    out: Linear,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    ffn_in: Linear,
    ffn_out: Linear,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// The loaded encoder. Read-only after construction: share it across threads freely.
pub struct BertEncoder {
    config: BertConfig,
    word: Vec<f32>,     // (vocab, hidden), segment-0 embedding included
    position: Vec<f32>, // (max_positions, hidden)
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    layers: Vec<Layer>,
    isa: Isa,
}

fn check(name: &str, got: usize, want: usize) -> CoreResult<()> {
    if got == want {
        return Ok(());
    }
    Err(CoreError::InvalidInput(format!(
        "{name} has {got} values, expected {want}"
    )))
}

impl BertEncoder {
    /// Build from embeddings (`word`: vocab × hidden, `position`: max_positions × hidden,
    /// embedding LayerNorm `ln_g`/`ln_b`) and the blocks' weights; packs the dense layers.
    pub fn new(
        config: BertConfig,
        word: Vec<f32>,
        position: Vec<f32>,
        ln_g: Vec<f32>,
        ln_b: Vec<f32>,
        layers: &[LayerWeights<'_>],
    ) -> CoreResult<BertEncoder> {
        let BertConfig {
            hidden: h,
            heads,
            intermediate: i,
            ..
        } = config;
        if h == 0 || heads == 0 || !h.is_multiple_of(heads) || i == 0 {
            return Err(CoreError::InvalidInput(format!(
                "hidden size {h} must be a positive multiple of the {heads} heads, and the \
                 intermediate size {i} positive"
            )));
        }
        if word.is_empty()
            || !word.len().is_multiple_of(h)
            || position.is_empty()
            || !position.len().is_multiple_of(h)
        {
            return Err(CoreError::InvalidInput(format!(
                "the word ({}) and position ({}) tables must be non-empty multiples of the \
                 hidden size {h}",
                word.len(),
                position.len()
            )));
        }
        if layers.is_empty() {
            return Err(CoreError::InvalidInput("the encoder has no layers".into()));
        }
        check("the embedding LayerNorm gain", ln_g.len(), h)?;
        check("the embedding LayerNorm bias", ln_b.len(), h)?;
        let p = config.precision;
        let packed = layers
            .iter()
            .enumerate()
            .map(|(n, l)| {
                let small = [
                    ("ln1_g", l.ln1_g),
                    ("ln1_b", l.ln1_b),
                    ("ln2_g", l.ln2_g),
                    ("ln2_b", l.ln2_b),
                ];
                for (name, v) in small {
                    check(&format!("layer {n} {name}"), v.len(), h)?;
                }
                let wrap = |e: CoreError, what: &str| match e {
                    CoreError::InvalidInput(m) => {
                        CoreError::InvalidInput(format!("layer {n} {what}: {m}"))
                    }
                    other => other,
                };
                Ok(Layer {
                    qkv: Linear::new(l.qkv_w, l.qkv_b, h, 3 * h, p).map_err(|e| wrap(e, "qkv"))?,
                    out: Linear::new(l.out_w, l.out_b, h, h, p).map_err(|e| wrap(e, "out"))?,
                    ln1_g: l.ln1_g.to_vec(),
                    ln1_b: l.ln1_b.to_vec(),
                    ffn_in: Linear::new(l.ffn_in_w, l.ffn_in_b, h, i, p)
                        .map_err(|e| wrap(e, "ffn_in"))?,
                    ffn_out: Linear::new(l.ffn_out_w, l.ffn_out_b, i, h, p)
                        .map_err(|e| wrap(e, "ffn_out"))?,
                    ln2_g: l.ln2_g.to_vec(),
                    ln2_b: l.ln2_b.to_vec(),
                })
            })
            .collect::<CoreResult<Vec<Layer>>>()?;
        Ok(BertEncoder {
            config,
            word,
            position,
            ln_g,
            ln_b,
            layers: packed,
            isa: Isa::detect(),
        })
    }

    /// The shape and settings it was built with.
    pub fn config(&self) -> BertConfig {
        self.config
    }

    /// Width of every output vector.
    pub fn hidden(&self) -> usize {
        self.config.hidden
    }

    /// Longest text (special tokens included) the position table covers.
    pub fn max_positions(&self) -> usize {
        self.position.len() / self.config.hidden
    }

    /// Size of the vocabulary (ids must be below it).
    pub fn vocab(&self) -> usize {
        self.word.len() / self.config.hidden
    }

    /// Number of transformer blocks.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The code path `encode` uses (detected at construction).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of packed dense weights (what one forward pass streams).
    pub fn weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                l.qkv.weight_bytes()
                    + l.out.weight_bytes()
                    + l.ffn_in.weight_bytes()
                    + l.ffn_out.weight_bytes()
            })
            .sum()
    }

    /// Embed texts given as token ids (special tokens included): `texts × hidden` f32,
    /// row-major, each row mean-pooled and of unit L2 norm.
    pub fn encode<S: AsRef<[u32]>>(&self, texts: &[S]) -> CoreResult<Vec<f32>> {
        self.encode_with(self.isa, texts)
    }

    /// [`BertEncoder::encode`] on a given path (the scalar one if the CPU lacks it).
    pub fn encode_with<S: AsRef<[u32]>>(&self, isa: Isa, texts: &[S]) -> CoreResult<Vec<f32>> {
        let (vocab, limit) = (self.vocab(), self.max_positions());
        for (n, ids) in texts.iter().enumerate() {
            let ids = ids.as_ref();
            if ids.is_empty() || ids.len() > limit {
                return Err(CoreError::InvalidInput(format!(
                    "text {n} has {} tokens; each text needs 1 to {limit} (special tokens \
                     included): truncate longer ones",
                    ids.len()
                )));
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(CoreError::InvalidInput(format!(
                    "text {n} has token id {bad}, past the vocabulary of {vocab}"
                )));
            }
        }
        let isa = if isa.is_supported() { isa } else { Isa::Scalar };
        let h = self.config.hidden;
        let mut out = vec![0f32; texts.len() * h];
        let mut first = 0;
        while first < texts.len() {
            let mut end = first;
            let mut tokens = 0;
            while end < texts.len()
                && (end == first || tokens + texts[end].as_ref().len() <= CHUNK_TOKENS)
            {
                tokens += texts[end].as_ref().len();
                end += 1;
            }
            self.encode_chunk(isa, &texts[first..end], &mut out[first * h..end * h]);
            first = end;
        }
        Ok(out)
    }

    /// One forward pass over texts already checked by `encode_with`.
    fn encode_chunk<S: AsRef<[u32]>>(&self, isa: Isa, texts: &[S], out: &mut [f32]) {
        let (h, i) = (self.config.hidden, self.config.intermediate);
        let lengths: Vec<usize> = texts.iter().map(|t| t.as_ref().len()).collect();
        let ids: Vec<u32> = texts
            .iter()
            .flat_map(|t| t.as_ref().iter().copied())
            .collect();
        let n = ids.len();
        WORKSPACE.with_borrow_mut(|ws| {
            ws.resize(n * h, n * (3 * h).max(i));
            self.forward(isa, &ids, &lengths, ws, out);
            ws.trim();
        });
    }

    /// The layers over one chunk's packed tokens, into `out` (texts × hidden).
    fn forward(
        &self,
        isa: Isa,
        ids: &[u32],
        lengths: &[usize],
        ws: &mut Workspace,
        out: &mut [f32],
    ) {
        let BertConfig {
            hidden: h,
            heads,
            intermediate: i,
            eps,
            ..
        } = self.config;
        let n = ids.len();
        let Workspace {
            x,
            y,
            wide,
            ctx,
            scratch,
        } = ws;
        let (x, y, ctx) = (&mut x[..n * h], &mut y[..n * h], &mut ctx[..n * h]);
        ops::embed(
            isa,
            ids,
            lengths,
            &self.word,
            &self.position,
            &self.ln_g,
            &self.ln_b,
            eps,
            x,
        );
        for layer in &self.layers {
            let qkv = &mut wide[..n * 3 * h];
            gemm(isa, x, n, &layer.qkv, qkv);
            ops::attention(isa, qkv, lengths, h, heads, ctx, scratch);
            gemm(isa, ctx, n, &layer.out, y);
            ops::add_layer_norm(isa, x, y, h, &layer.ln1_g, &layer.ln1_b, eps);
            let ffn = &mut wide[..n * i];
            gemm(isa, x, n, &layer.ffn_in, ffn);
            ops::gelu(isa, ffn);
            gemm(isa, ffn, n, &layer.ffn_out, y);
            ops::add_layer_norm(isa, x, y, h, &layer.ln2_g, &layer.ln2_b, eps);
        }
        ops::mean_pool(isa, x, lengths, h, out);
    }
}
