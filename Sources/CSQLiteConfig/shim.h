#ifndef COFFER_CSQLITECONFIG_SHIM_H
#define COFFER_CSQLITECONFIG_SHIM_H
#include <sqlite3.h>

/// Sets an on/off option of `sqlite3_db_config` (SQLITE_DBCONFIG_DEFENSIVE,
/// SQLITE_DBCONFIG_ENABLE_TRIGGER...) on a connection (`on`: 1 or 0; -1 only reads it) and
/// returns the setting as it is afterwards, or -1 when SQLite refused. `sqlite3_db_config` is
/// variadic: Swift cannot call it directly.
static inline int coffer_sqlite_db_flag(sqlite3 *db, int option, int on) {
    int now = -1;
    if (sqlite3_db_config(db, option, on, &now) != SQLITE_OK) return -1;
    return now;
}
#endif
