#pragma once

// The Job controller (batch/v1, upstream's semantics as of Kubernetes 1.32): runs a Job's pods
// until enough of them succeed (spec.completions, or, when completions is unset, until one
// succeeds and the rest have finished: the work-queue pattern), at most spec.parallelism at a
// time; NonIndexed or Indexed completion (each index 0..completions-1 succeeds once; its pods
// carry the batch.kubernetes.io/job-completion-index annotation and label, the
// JOB_COMPLETION_INDEX variable and the hostname <job>-<index>).
//
// Pods are tracked with the batch.kubernetes.io/job-tracking finalizer: a finished or deleted
// pod is first recorded in status.uncountedTerminatedPods, then its finalizer is removed, then
// it moves into status.succeeded/failed, so no pod is lost or counted twice even when a pod is
// deleted or the controller restarts between steps. A pod deleted before it succeeded (e.g. lost
// with its node) counts as failed and is replaced.
//
// Failed pods are re-created after a back-off (10 s doubling, at most 6 minutes); more failures
// than spec.backoffLimit (default 6; container restarts for restartPolicy OnFailure) fail the Job
// with reason BackoffLimitExceeded, and a Job active longer than activeDeadlineSeconds fails with
// DeadlineExceeded; its active pods are deleted first and the Failed condition follows the
// interim FailureTarget condition once they are gone (Complete follows SuccessCriteriaMet the
// same way). spec.suspend deletes the active pods and sets the Suspended condition; resuming
// resets status.startTime. Not implemented: podFailurePolicy rules, successPolicy,
// backoffLimitPerIndex/maxFailedIndexes (a Job using them is run without them).
//
// Thread-safety: as every Controller (controller.h).

#include <memory>

#include "controllers/controller.h"

namespace skiff::controllers {

std::unique_ptr<Controller> new_job_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
