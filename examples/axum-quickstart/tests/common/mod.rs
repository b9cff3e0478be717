pub(crate) mod tour;
