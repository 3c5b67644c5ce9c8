#ifndef COFFER_CARCHIVE_SHIM_H
#define COFFER_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>
#endif
