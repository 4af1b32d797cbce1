//! The services of a snapshot, in catalog order, stored so that a change copies a few
//! hundred pointers rather than one per service.
//!
//! A flip replaces one service's view. With a flat `Vec<Arc<ServiceView>>` every change
//! clones (and every replaced snapshot drops) one `Arc` per service: at 100,000 services
//! that alone took milliseconds per flip. Here the views sit in shared chunks of
//! [`CHUNK`]; a change copies the chunk list and the one chunk that changed.

use std::sync::Arc;

use super::ServiceView;

/// Views per chunk: a change copies `len / CHUNK` chunk pointers and `CHUNK` views.
pub const CHUNK: usize = 256;

/// Every service's view, indexed by catalog order.
#[derive(Clone, Default)]
pub struct Services {
    chunks: Vec<Chunk>,
    len: usize,
}

impl Services {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: usize) -> Option<&Arc<ServiceView>> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    pub fn iter(&self) -> Iter<'_> {
        self.into_iter()
    }

    /// These services with `changed` (index, new view) in place; the other chunks are
    /// shared with `self`.
    pub fn with(&self, changed: impl IntoIterator<Item = (usize, Arc<ServiceView>)>) -> Services {
        let mut next = self.clone();
        for (index, view) in changed {
            let chunk = &mut next.chunks[index / CHUNK];
            let mut copy: Vec<Arc<ServiceView>> = chunk.to_vec();
            copy[index % CHUNK] = view;
            *chunk = copy.into();
        }
        next
    }
}

impl FromIterator<Arc<ServiceView>> for Services {
    fn from_iter<I: IntoIterator<Item = Arc<ServiceView>>>(views: I) -> Services {
        let all: Vec<Arc<ServiceView>> = views.into_iter().collect();
        Services {
            len: all.len(),
            chunks: all.chunks(CHUNK).map(Arc::from).collect(),
        }
    }
}

impl std::ops::Index<usize> for Services {
    type Output = Arc<ServiceView>;

    fn index(&self, index: usize) -> &Arc<ServiceView> {
        &self.chunks[index / CHUNK][index % CHUNK]
    }
}

type Chunk = Arc<[Arc<ServiceView>]>;

/// The views in catalog order.
pub type Iter<'a> = std::iter::FlatMap<
    std::slice::Iter<'a, Chunk>,
    std::slice::Iter<'a, Arc<ServiceView>>,
    fn(&'a Chunk) -> std::slice::Iter<'a, Arc<ServiceView>>,
>;

impl<'a> IntoIterator for &'a Services {
    type Item = &'a Arc<ServiceView>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        fn views(chunk: &Chunk) -> std::slice::Iter<'_, Arc<ServiceView>> {
            chunk.iter()
        }
        self.chunks.iter().flat_map(views as fn(&'a Chunk) -> _)
    }
}
