/*===- attnc.h - The stable C API of the attnc runtime -------------*- C -*-===*
 *
 * Loads kernel packages (.attnpkg) produced by `attnc compile` and launches
 * them on CUDA devices. C99, no dependencies; every function returns an
 * attnc_status and leaves a message for attnc_last_error() on failure.
 *
 * Stability: handles are opaque; structs are only ever extended at the end;
 * enumerator values never change. ATTNC_API_VERSION is bumped on additions.
 *
 *===----------------------------------------------------------------------===*/

#ifndef ATTNC_ATTNC_H
#define ATTNC_ATTNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNC_API_VERSION 1

/*===-- Errors ------------------------------------------------------------===*/

typedef enum attnc_status {
  ATTNC_OK = 0,
  /** A tensor, param or argument count does not match the kernel. */
  ATTNC_ERROR_INVALID_ARGUMENT = 1,
  /** The package is corrupt, truncated, of another version or inconsistent. */
  ATTNC_ERROR_INVALID_PACKAGE = 2,
  /** A file could not be read or written. */
  ATTNC_ERROR_IO = 3,
  /** No CUDA driver or no CUDA device on this machine. */
  ATTNC_ERROR_NO_DEVICE = 4,
  /** The CUDA driver reported an error (message has its name and text). */
  ATTNC_ERROR_CUDA = 5,
  /** A named kernel entry or argument does not exist. */
  ATTNC_ERROR_NOT_FOUND = 6,
} attnc_status;

/** The message of the last failed call on this thread ("" if none). The
 * pointer stays valid until the next attnc call on this thread. */
const char *attnc_last_error(void);

/** A static name for a status code: "ATTNC_ERROR_NO_DEVICE". */
const char *attnc_status_name(attnc_status status);

/*===-- Tensors (DLPack layout) -------------------------------------------===*/

/** Device types, with DLPack's values. */
typedef enum attnc_device_type {
  ATTNC_DEVICE_CPU = 1,
  ATTNC_DEVICE_CUDA = 2,
  ATTNC_DEVICE_CUDA_HOST = 3,
  ATTNC_DEVICE_CUDA_MANAGED = 13,
} attnc_device_type;

/** Type codes, with DLPack's values. */
typedef enum attnc_dtype_code {
  ATTNC_DTYPE_INT = 0,
  ATTNC_DTYPE_UINT = 1,
  ATTNC_DTYPE_FLOAT = 2,
  ATTNC_DTYPE_BFLOAT = 4,
  ATTNC_DTYPE_BOOL = 6,
} attnc_dtype_code;

typedef struct attnc_dtype {
  uint8_t code;   /**< an attnc_dtype_code */
  uint8_t bits;   /**< 16, 32, ... (8 for bool) */
  uint16_t lanes; /**< 1; vector types are not supported */
} attnc_dtype;

/** A strided view of memory, field for field DLPack's DLTensor. `strides` is
 * in elements; NULL means compact row-major. The element at index (i0, ...)
 * is at (char *)data + byte_offset + sizeof(elt) * sum(ik * strides[k]). */
typedef struct attnc_tensor {
  void *data;
  int32_t device_type; /**< an attnc_device_type */
  int32_t device_id;
  int32_t ndim;
  attnc_dtype dtype;
  const int64_t *shape;
  const int64_t *strides;
  uint64_t byte_offset;
} attnc_tensor;

/*===-- Packages and their signatures -------------------------------------===*/

typedef struct attnc_package_t *attnc_package;

/** Reads and validates a .attnpkg file. Touches no GPU. */
attnc_status attnc_package_load(const char *path, attnc_package *out);
/** The same from bytes in memory (copied). */
attnc_status attnc_package_load_memory(const void *bytes, size_t size,
                                       attnc_package *out);
/** Frees the package, unloads its modules and frees its workspace buffers;
 * its launches must have finished. NULL is a no-op. */
void attnc_package_free(attnc_package pkg);

/** Name and target ("sm_90a") of the kernel in the package. */
const char *attnc_package_name(attnc_package pkg);
const char *attnc_package_target(attnc_package pkg);

typedef enum attnc_arg_kind {
  ATTNC_ARG_DIM = 0,
  ATTNC_ARG_INPUT = 1,
  ATTNC_ARG_PARAM = 2,
  ATTNC_ARG_OUTPUT = 3,
} attnc_arg_kind;

/** What a tensor's strides must satisfy. */
typedef enum attnc_layout {
  /** Compact row-major. */
  ATTNC_LAYOUT_CONTIGUOUS = 0,
  /** Innermost stride 1; other strides free (non-negative). */
  ATTNC_LAYOUT_INNER_CONTIGUOUS = 1,
  /** Any non-negative strides. */
  ATTNC_LAYOUT_STRIDED = 2,
} attnc_layout;

/** One entry of a kernel signature: the dims first, then the inputs, params
 * and outputs in declaration order. Pointers are owned by the package. */
typedef struct attnc_arg_info {
  const char *name;
  int32_t kind;      /**< an attnc_arg_kind */
  attnc_dtype dtype; /**< inputs, outputs, params (dims: int64) */
  /** Dims: the fixed size, or -1 when symbolic. Tensors: the rank. */
  int64_t size;
  /** Tensors: per axis, a dim name or NULL when the axis has a literal size
   * given by axis_sizes[k]. */
  const char *const *axis_dims;
  const int64_t *axis_sizes;
  int32_t layout; /**< tensors: an attnc_layout */
  /** Params: whether a default exists, and its value. */
  int32_t has_default;
  double default_value;
} attnc_arg_info;

size_t attnc_package_num_args(attnc_package pkg);
attnc_status attnc_package_arg(attnc_package pkg, size_t index,
                               attnc_arg_info *out);
/** Number of GPU entry points; launched in order by attnc_launch. */
size_t attnc_package_num_entries(attnc_package pkg);
const char *attnc_package_entry_name(attnc_package pkg, size_t index);

/*===-- Devices, streams, events, memory ----------------------------------===*/

/** Number of CUDA devices; 0 when there is no driver or no device (the
 * reason is then in attnc_last_error()). Never aborts. */
int attnc_device_count(void);

typedef struct attnc_stream_t *attnc_stream;
typedef struct attnc_event_t *attnc_event;

attnc_status attnc_stream_create(int device, attnc_stream *out);
/** A handle on `cuda_stream` (a CUstream of `device` that the caller owns,
 * such as a framework's current stream; NULL is the legacy default stream),
 * so that launches join the caller's stream order. attnc_stream_destroy
 * frees the handle and leaves the stream alone. */
attnc_status attnc_stream_wrap(int device, void *cuda_stream,
                               attnc_stream *out);
attnc_status attnc_stream_synchronize(attnc_stream stream);
/** NULL is a no-op. */
attnc_status attnc_stream_destroy(attnc_stream stream);

attnc_status attnc_event_create(int device, attnc_event *out);
/** Records on `stream` (NULL: the device's default stream). */
attnc_status attnc_event_record(attnc_event event, attnc_stream stream);
/** Milliseconds between two recorded events; synchronizes on `end`. */
attnc_status attnc_event_elapsed_ms(attnc_event start, attnc_event end,
                                    float *ms);
attnc_status attnc_event_destroy(attnc_event event);

attnc_status attnc_device_alloc(int device, size_t bytes, void **out);
attnc_status attnc_device_free(int device, void *ptr);
/** Synchronous copies between host and device memory of `device`. */
attnc_status attnc_copy_to_device(int device, void *dst, const void *src,
                                  size_t bytes);
attnc_status attnc_copy_to_host(int device, void *dst, const void *src,
                                size_t bytes);
/** Sets `bytes` bytes at `dst` to `value`; done when it returns. */
attnc_status attnc_device_memset(int device, void *dst, uint8_t value,
                                 size_t bytes);

/*===-- Launching ---------------------------------------------------------===*/

/** Loads the package's modules on `device` now (JIT-compiles PTX), so that
 * load errors and JIT time show up before the first launch. */
attnc_status attnc_package_prepare(attnc_package pkg, int device);

/** Checks every argument against the signature and, if all match, launches
 * the package's entries in order on `stream` (NULL: the default stream of
 * the tensors' device). With `entry_name` non-NULL only that entry runs.
 * An entry whose `when` formula is zero for the launch's dims does not run;
 * when no selected entry runs (e.g. `entry_name` names such an entry), the
 * call returns ATTNC_OK after the argument checks and launches nothing.
 * An entry that loads tiles through TMA tensor maps runs its fallback entries
 * in its place when TMA cannot describe the tensors (or the driver has no
 * TMA); a fallback runs only so, or when `entry_name` names it.
 * `inputs` and `outputs` are in signature order; `params` holds the first
 * `num_params` params in order, the rest take their defaults. All argument
 * checks happen before any driver call. Asynchronous, like a CUDA launch.
 *
 * Workspaces (scratch buffers the package declares) are allocated by the
 * runtime on first need and grown when a launch needs more; they belong to
 * the package and are separate per device and stream, so that launches on
 * two streams never share one. Their contents are not initialised: kernels
 * must write them before reading. */
attnc_status attnc_launch(attnc_package pkg, const char *entry_name,
                          const attnc_tensor *inputs, size_t num_inputs,
                          const double *params, size_t num_params,
                          const attnc_tensor *outputs, size_t num_outputs,
                          attnc_stream stream);

/** A launch checked once. attnc_launch derives from its arguments' dtypes,
 * shapes, strides, devices and params the dims, the entries that run, their
 * grids and kernel parameters and the workspace sizes; a plan keeps them, so
 * that launching tensors that differ only in their data pointers (a training
 * loop calling the same attention every step) repeats none of it. A plan
 * refers to its package, which must outlive it; one plan may be launched
 * from several threads at once. */
typedef struct attnc_plan_t *attnc_plan;

/** Checks the arguments as attnc_launch does (without the driver) and makes
 * a plan of the launch; the tensors' data pointers are not kept. */
attnc_status attnc_plan_create(attnc_package pkg, const char *entry_name,
                               const attnc_tensor *inputs, size_t num_inputs,
                               const double *params, size_t num_params,
                               const attnc_tensor *outputs, size_t num_outputs,
                               attnc_plan *out);

/** The number of workspaces of the plan's package, and the bytes workspace
 * `index` needs for the plan's launch (0: that one is not used). */
size_t attnc_plan_num_workspaces(attnc_plan plan);
size_t attnc_plan_workspace_bytes(attnc_plan plan, size_t index);

/** Launches `plan` on `stream` with input i at `input_data[i]` and output j
 * at `output_data[j]` (each plus the byte offset its tensor had when the
 * plan was made). The caller guarantees that each tensor has the dtype,
 * shape and strides the plan was made with; the runtime checks, as
 * attnc_launch does, that each pointer is memory of the plan's device
 * (a pointer found so once is not asked about again).
 *
 * `workspace_data` NULL: the runtime's own workspace buffers for `stream`
 * (as attnc_launch). Otherwise the caller's: `workspace_data[w]` is device
 * memory of at least attnc_plan_workspace_bytes(plan, w) bytes, 256-byte
 * aligned, that stays the kernels' until they finish on `stream` (a
 * framework's stream-ordered allocator gives exactly that, and its buffers
 * can be captured in a CUDA graph, which the runtime's, allocated on first
 * use of a stream, cannot). */
attnc_status attnc_plan_launch(attnc_plan plan, void *const *input_data,
                               void *const *output_data,
                               void *const *workspace_data,
                               attnc_stream stream);

void attnc_plan_free(attnc_plan plan);

/** Only the argument checks of attnc_launch (of all entries): no driver
 * call. On success `dim_values` (if non-NULL, of at least as many entries as
 * the package has dims) receives the bound value of every dim. */
attnc_status attnc_check_args(attnc_package pkg, const attnc_tensor *inputs,
                              size_t num_inputs, const double *params,
                              size_t num_params, const attnc_tensor *outputs,
                              size_t num_outputs, int64_t *dim_values);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ATTNC_ATTNC_H */
