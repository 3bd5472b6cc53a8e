#pragma once

// The TTL-after-finished controller: deletes a finished Job (Complete or Failed) once
// spec.ttlSecondsAfterFinished seconds have passed since it finished, re-reading the Job from
// the API server before deleting so a TTL changed meanwhile is honoured. The Job is deleted with
// propagationPolicy Background (its pods go through the garbage collector) and a uid
// precondition, so a new Job of the same name is never deleted by mistake. Jobs are requeued at
// the time they expire rather than polled.
//
// Thread-safety: as every Controller (controller.h).

#include <memory>

#include "controllers/controller.h"

namespace skiff::controllers {

std::unique_ptr<Controller> new_ttlafterfinished_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
