#pragma once

// Server-side printer columns: the Table that `kubectl get` asks for
// (Accept: application/json;as=Table;v=v1;g=meta.k8s.io), per built-in resource, with upstream's
// column names, types, priorities (priority 1: `-o wide` only) and cell rules.
//
// The server always computes the wide cells; kubectl hides priority > 0 columns itself. Durations
// (AGE, LAST SEEN, ...) are rendered at request time relative to the clock's "now".
//
// Cell functions accept any JSON shape (objects come from users) and never throw.
//
// Thread-safety: the returned columns are immutable; their cells may run concurrently.

#include <chrono>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "apiserver/registry.h"

namespace skiff::apiserver {

using TableClock = std::function<std::chrono::system_clock::time_point()>;

// Every built-in resource's columns, keyed "group/resource" ("/pods" for the core group). Cells
// read "now" from `clock`.
std::unordered_map<std::string, std::vector<TableColumn>> printer_columns(TableClock clock);

// Registers printer_columns() with the system clock. Call before serving.
void install_tables(Registry& registry);

// Upstream's translate.HumanDuration: "45s", "5m30s", "3h", "2d3h", "3y12d", "<invalid>".
std::string human_duration(std::chrono::system_clock::duration d);

}  // namespace skiff::apiserver
