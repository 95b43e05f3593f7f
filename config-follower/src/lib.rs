//! config-follower (skeleton until the follower issue lands).
