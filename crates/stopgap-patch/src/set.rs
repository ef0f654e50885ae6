//! The compiled, immutable set of applied patches.

use std::sync::Arc;

use crate::file::{Mode, Patch, Phase, Protocol};
use crate::prefilter::Prefilter;

/// One applied patch in a set, with the mode it is applied in.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The patch.
    pub patch: Arc<Patch>,
    /// The mode in force (may differ from the file's).
    pub mode: Mode,
}

/// An immutable snapshot of the applied patches, with one prefilter per phase.
///
/// Built whole, then swapped in at once by the data plane; open connections see it from their
/// next message.
#[derive(Debug, Clone)]
pub struct PatchSet {
    /// Generation number (bumped on every successful rebuild).
    pub generation: u64,
    request: Vec<Applied>,
    response: Vec<Applied>,
    ftp: Vec<Applied>,
    smtp: Vec<Applied>,
    request_filter: Prefilter,
    /// The literals of the body-reading request patches only: the body phase evaluates no
    /// other, so a long body is scanned for fewer patterns.
    body_filter: Prefilter,
    response_filter: Prefilter,
    any_body: bool,
}

impl PatchSet {
    /// Builds a set from applied patches.
    #[must_use]
    pub fn new(generation: u64, applied: Vec<Applied>) -> Self {
        let (mut ftp, mut smtp, mut http) = (Vec::new(), Vec::new(), Vec::new());
        for a in applied {
            match a.patch.protocol {
                Protocol::Http => http.push(a),
                Protocol::Ftp => ftp.push(a),
                Protocol::Smtp => smtp.push(a),
            }
        }
        let (request, response): (Vec<_>, Vec<_>) = http
            .into_iter()
            .partition(|a| a.patch.phase == Phase::Request);
        // Literal sets and shortest lengths were worked out when each patch was loaded.
        let filter = |list: &[Applied], body_only: bool| {
            let reads = |a: &Applied| !body_only || a.patch.needs_body;
            let sets: Vec<_> = list
                .iter()
                .map(|a| {
                    if reads(a) {
                        a.patch.literals.clone()
                    } else {
                        // Never a candidate: the body phase does not evaluate it.
                        Some(Vec::new())
                    }
                })
                .collect();
            let lengths: Vec<usize> = list
                .iter()
                .map(|a| if reads(a) { a.patch.min_message_len } else { 0 })
                .collect();
            Prefilter::new_located(&sets).with_min_lengths(&lengths)
        };
        Self {
            generation,
            body_filter: filter(&request, true),
            any_body: request.iter().any(|a| a.patch.needs_body),
            request_filter: filter(&request, false),
            response_filter: filter(&response, false),
            request,
            response,
            ftp,
            smtp,
        }
    }

    /// A set with every patch in the mode its file states.
    #[must_use]
    pub fn from_patches(generation: u64, patches: Vec<Patch>) -> Self {
        let applied = patches
            .into_iter()
            .map(|p| Applied {
                mode: p.mode,
                patch: Arc::new(p),
            })
            .collect();
        Self::new(generation, applied)
    }

    /// An empty set.
    #[must_use]
    pub fn empty() -> Self {
        Self::new(0, Vec::new())
    }

    /// Request-phase patches.
    #[must_use]
    pub fn request_patches(&self) -> &[Applied] {
        &self.request
    }

    /// Response-phase patches.
    #[must_use]
    pub fn response_patches(&self) -> &[Applied] {
        &self.response
    }

    /// FTP patches.
    #[must_use]
    pub fn ftp_patches(&self) -> &[Applied] {
        &self.ftp
    }

    /// SMTP patches.
    #[must_use]
    pub fn smtp_patches(&self) -> &[Applied] {
        &self.smtp
    }

    /// Whether any request patch reads the body.
    #[must_use]
    pub fn any_needs_body(&self) -> bool {
        self.any_body
    }

    /// Marks the request patches to evaluate for a message made of `haystacks`.
    pub fn request_candidates(&self, haystacks: &[&[u8]], hits: &mut Vec<bool>) {
        self.request_filter.candidates(haystacks, hits);
    }

    /// Marks the body-reading request patches to evaluate for a request with a body (the
    /// others need not be marked: the body phase does not evaluate them). `head_hits`: what
    /// [`PatchSet::request_candidates`] of this set found in this very head, if known; the
    /// head is then not scanned again.
    pub fn request_body_candidates(
        &self,
        head: &[u8],
        head_hits: Option<&[bool]>,
        body: &[u8],
        hits: &mut Vec<bool>,
    ) {
        self.body_filter
            .candidates_with_body(head, head_hits, body, hits);
    }

    /// Marks the response patches to evaluate.
    pub fn response_candidates(&self, haystacks: &[&[u8]], hits: &mut Vec<bool>) {
        self.response_filter.candidates(haystacks, hits);
    }

    /// Number of applied patches.
    #[must_use]
    pub fn len(&self) -> usize {
        self.request.len() + self.response.len() + self.ftp.len() + self.smtp.len()
    }

    /// Whether no patch is applied.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every applied patch, of every protocol and phase.
    pub fn all(&self) -> impl Iterator<Item = &Applied> {
        self.request
            .iter()
            .chain(&self.response)
            .chain(&self.ftp)
            .chain(&self.smtp)
    }
}
