//! The script registry: every file of lua/, compiled in with the shared helpers prepended.

use crate::backend::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("lua/", $file, ".lua")]
        pub static $name: Script = Script::new(
            $file,
            concat!(
                include_str!("../../lua/lib.lua"),
                include_str!(concat!("../../lua/", $file, ".lua"))
            ),
        );
    };
}

script!(SUBMIT, "submit");
script!(READ_PAGE, "read_page");
script!(READ_MEMBERS, "read_members");
script!(BOARD_PUT, "board_put");
script!(BOARD_GET, "board_get");
script!(REGISTRY, "registry");
script!(KEY_INDEX, "key_index");
script!(REMOVE_MEMBER, "remove_member");
script!(DELETE_BOARD, "delete_board");
script!(DISPLAY_PUT, "display_put");
script!(LOG_READ, "log_read");
script!(LOG_TRIM, "log_trim");
script!(LOG_SEQ, "log_seq");
script!(DISCARD, "discard");
script!(SNAPSHOT_KEY, "snapshot_key");
script!(RESTORE, "restore");
script!(SCORE_SPAN, "score_span");
script!(REBUILD_BEAT, "rebuild_beat");
script!(DEDUPE_GET, "dedupe_get");
script!(STORE_PAIR, "store_pair");
script!(CACHE_CLEARS, "cache_clears");
script!(SCOPE_COUNT, "scope_count");
script!(SCOPE_BACKFILL, "scope_backfill");
script!(SNAPSHOT_BOARD, "snapshot_board");
script!(TRIM, "trim");

/// Every script, for loading at start-up.
pub fn all() -> [&'static Script; 25] {
    [
        &SUBMIT,
        &READ_PAGE,
        &READ_MEMBERS,
        &BOARD_PUT,
        &BOARD_GET,
        &REGISTRY,
        &KEY_INDEX,
        &REMOVE_MEMBER,
        &DELETE_BOARD,
        &DISPLAY_PUT,
        &LOG_READ,
        &LOG_TRIM,
        &LOG_SEQ,
        &DISCARD,
        &SNAPSHOT_KEY,
        &RESTORE,
        &SCORE_SPAN,
        &REBUILD_BEAT,
        &DEDUPE_GET,
        &STORE_PAIR,
        &CACHE_CLEARS,
        &SCOPE_COUNT,
        &SCOPE_BACKFILL,
        &SNAPSHOT_BOARD,
        &TRIM,
    ]
}
