//===- Launcher.cpp - attnc._launcher: a GPU kernel call without Python ---===//
//
// The per-call work of a GpuKernel on torch tensors, in C: read each tensor's
// dtype, device, shape, strides and data pointer, find the launch plan made
// for tensors alike (attnc_plan_create, by _runtime.py's checked launch),
// allocate the outputs with torch.empty (PyTorch's caching allocator), and
// launch the plan on PyTorch's current stream of the tensors' device.
//
// A call this module does not take (a new shape, tensors that require grad
// while grad mode is on, keyword arguments that are not params, anything but
// plain CUDA tensors) returns None, and _runtime.py does it the checked way,
// which then hands this module the plan for the next call alike.
//
// It links nothing: the runtime's entry points come as addresses from the
// library _runtime.py loaded with ctypes, so both use one runtime instance.
//
//===----------------------------------------------------------------------===//

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "attnc/attnc.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

// The runtime entry points used here, called through the addresses ctypes
// resolved (the header declares them; nothing is linked).
using PlanLaunchFn = decltype(&attnc_plan_launch);
using PlanFreeFn = decltype(&attnc_plan_free);
using StreamWrapFn = decltype(&attnc_stream_wrap);
using LastErrorFn = decltype(&attnc_last_error);

constexpr int kMaxRank = 8;
constexpr size_t kMaxTensors = 64;
/// Plans kept per kernel, most recently used first.
constexpr size_t kMaxPlans = 16;

/// The attribute and method names read per call, interned once.
struct Names {
  PyObject *requiresGrad, *dtype, *getDevice, *shape, *stride, *dataPtr;
};
Names names;

bool internNames() {
  names = {PyUnicode_InternFromString("requires_grad"),
           PyUnicode_InternFromString("dtype"),
           PyUnicode_InternFromString("get_device"),
           PyUnicode_InternFromString("shape"),
           PyUnicode_InternFromString("stride"),
           PyUnicode_InternFromString("data_ptr")};
  return names.requiresGrad && names.dtype && names.getDevice &&
         names.shape && names.stride && names.dataPtr;
}

/// What a plan depends on of one tensor.
struct TensorKey {
  PyObject *dtype = nullptr; ///< torch.dtype objects are singletons
  int device = -1;
  int rank = 0;
  int64_t shape[kMaxRank];
  int64_t strides[kMaxRank];

  bool operator==(const TensorKey &o) const {
    return dtype == o.dtype && device == o.device && rank == o.rank &&
           std::memcmp(shape, o.shape, rank * sizeof(int64_t)) == 0 &&
           std::memcmp(strides, o.strides, rank * sizeof(int64_t)) == 0;
  }
};

struct Plan {
  std::vector<TensorKey> inputs;
  std::vector<double> params;
  attnc_plan handle = nullptr;
  /// Per output: its shape (a tuple) and torch dtype; strong references.
  std::vector<PyObject *> outputShapes, outputDtypes;
  /// Per workspace of the package: its size as a (bytes,) tuple, null for
  /// one the plan does not use.
  std::vector<PyObject *> workspaceShapes;
  PyObject *device = nullptr; ///< the torch.device outputs are made on
};

struct StreamHandle {
  int device;
  void *cudaStream;
  attnc_stream handle;
};

struct LauncherObject {
  PyObject_HEAD
  std::string *name;
  PlanLaunchFn planLaunch;
  PlanFreeFn planFree;
  StreamWrapFn streamWrap;
  LastErrorFn lastError;
  Py_ssize_t numInputs;
  std::vector<PyObject *> *paramNames; ///< interned str, strong references
  std::vector<double> *paramDefaults;
  std::vector<bool> *paramHasDefault;
  PyObject *tensorType, *parameterType, *empty, *gradEnabled, *rawStream;
  PyObject *bytesDtype; ///< torch.uint8, of workspaces
  PyObject *emptyKwnames; ///< ("dtype", "device")
  std::vector<Plan> *plans;
  std::vector<StreamHandle> *streams;
};

/// Reads the key of `obj` and its data pointer; false (no error set) when
/// `obj` is not a plain torch tensor this path takes.
bool readTensor(LauncherObject *self, PyObject *obj, TensorKey &key,
                void *&data, bool gradEnabled) {
  PyTypeObject *type = Py_TYPE(obj);
  if (type != reinterpret_cast<PyTypeObject *>(self->tensorType) &&
      type != reinterpret_cast<PyTypeObject *>(self->parameterType))
    return false;
  bool ok = false;
  PyObject *dtype = nullptr, *device = nullptr, *shape = nullptr,
           *strides = nullptr, *pointer = nullptr;
  if (gradEnabled) {
    PyObject *requiresGrad = PyObject_GetAttr(obj, names.requiresGrad);
    bool records = requiresGrad == Py_True;
    Py_XDECREF(requiresGrad);
    if (!requiresGrad || records)
      goto done;
  }
  dtype = PyObject_GetAttr(obj, names.dtype);
  device = PyObject_CallMethodNoArgs(obj, names.getDevice);
  shape = PyObject_GetAttr(obj, names.shape);
  strides = PyObject_CallMethodNoArgs(obj, names.stride);
  pointer = PyObject_CallMethodNoArgs(obj, names.dataPtr);
  if (!dtype || !device || !shape || !strides || !pointer ||
      !PyTuple_Check(shape) || !PyTuple_Check(strides))
    goto done;
  key.dtype = dtype;
  key.device = static_cast<int>(PyLong_AsLong(device));
  key.rank = static_cast<int>(PyTuple_GET_SIZE(shape));
  if (key.device < 0 || key.rank > kMaxRank ||
      PyTuple_GET_SIZE(strides) != key.rank)
    goto done;
  for (int k = 0; k < key.rank; ++k) {
    key.shape[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, k));
    key.strides[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides, k));
  }
  data = PyLong_AsVoidPtr(pointer);
  ok = !PyErr_Occurred();
done:
  PyErr_Clear();
  Py_XDECREF(dtype); // the dtype singleton outlives the call
  Py_XDECREF(device);
  Py_XDECREF(shape);
  Py_XDECREF(strides);
  Py_XDECREF(pointer);
  return ok;
}

/// The params of a call: keyword arguments by name, else the defaults; false
/// (no error set) for another keyword or a missing param.
bool readParams(LauncherObject *self, PyObject *kwargs,
                std::vector<double> &params) {
  const std::vector<PyObject *> &names = *self->paramNames;
  params.assign(self->paramDefaults->begin(), self->paramDefaults->end());
  std::vector<bool> given(names.size(), false);
  if (kwargs) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
      size_t i = 0;
      while (i < names.size() &&
             PyUnicode_Compare(key, names[i]) != 0)
        ++i;
      if (i == names.size())
        return false;
      double v = PyFloat_AsDouble(value);
      if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return false;
      }
      params[i] = v;
      given[i] = true;
    }
  }
  for (size_t i = 0; i < names.size(); ++i)
    if (!given[i] && !(*self->paramHasDefault)[i])
      return false;
  return true;
}

/// The attnc_stream of PyTorch's current stream on `device` (null for the
/// legacy default stream); null with an error set on failure.
bool currentStream(LauncherObject *self, int device, attnc_stream &out) {
  PyObject *raw = PyObject_CallFunction(self->rawStream, "i", device);
  if (!raw)
    return false;
  void *cudaStream = PyLong_AsVoidPtr(raw);
  Py_DECREF(raw);
  if (PyErr_Occurred())
    return false;
  out = nullptr;
  if (!cudaStream)
    return true;
  for (const StreamHandle &s : *self->streams)
    if (s.device == device && s.cudaStream == cudaStream)
      return out = s.handle, true;
  attnc_stream handle = nullptr;
  if (self->streamWrap(device, cudaStream, &handle) != 0) {
    PyErr_Format(PyExc_RuntimeError, "kernel '%s': %s", self->name->c_str(),
                 self->lastError());
    return false;
  }
  self->streams->push_back({device, cudaStream, handle});
  out = handle;
  return true;
}

PyObject *launchPlanned(LauncherObject *self, PyObject *inputs,
                        const std::vector<double> &params, bool gradEnabled);

/// launcher(*inputs, **params): a call on the kernel, None (and nothing
/// launched) when an input requires grad while grad mode is on, since such
/// a call is autograd's.
PyObject *Launcher_call(PyObject *selfObj, PyObject *args, PyObject *kwargs) {
  auto *self = reinterpret_cast<LauncherObject *>(selfObj);
  std::vector<double> params;
  if (!readParams(self, kwargs, params))
    Py_RETURN_NONE;
  PyObject *gradObj = PyObject_CallNoArgs(self->gradEnabled);
  if (!gradObj)
    return nullptr;
  bool gradEnabled = gradObj == Py_True;
  Py_DECREF(gradObj);
  return launchPlanned(self, args, params, gradEnabled);
}

/// launch(inputs, params): the launch under autograd's record of the call
/// (inputs may require grad), every param given in order.
PyObject *Launcher_launch(PyObject *selfObj, PyObject *args) {
  auto *self = reinterpret_cast<LauncherObject *>(selfObj);
  PyObject *inputs, *paramsObj;
  if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &inputs, &PyTuple_Type,
                        &paramsObj))
    return nullptr;
  if (PyTuple_GET_SIZE(paramsObj) !=
      static_cast<Py_ssize_t>(self->paramNames->size()))
    Py_RETURN_NONE;
  std::vector<double> params;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(paramsObj); ++i) {
    params.push_back(PyFloat_AsDouble(PyTuple_GET_ITEM(paramsObj, i)));
    if (PyErr_Occurred()) {
      PyErr_Clear();
      Py_RETURN_NONE;
    }
  }
  return launchPlanned(self, inputs, params, /*gradEnabled=*/false);
}

/// The launch of the plan for `inputs` (a tuple) and `params`; None when
/// there is none or an input is not a plain CUDA tensor (or, with
/// `gradEnabled`, requires grad).
PyObject *launchPlanned(LauncherObject *self, PyObject *inputs,
                        const std::vector<double> &params, bool gradEnabled) {
  Py_ssize_t n = PyTuple_GET_SIZE(inputs);
  if (!self->rawStream || n != self->numInputs ||
      static_cast<size_t>(n) > kMaxTensors)
    Py_RETURN_NONE;
  TensorKey keys[kMaxTensors];
  void *inputData[kMaxTensors];
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!readTensor(self, PyTuple_GET_ITEM(inputs, i), keys[i], inputData[i],
                    gradEnabled))
      Py_RETURN_NONE;
  std::vector<Plan> &plans = *self->plans;
  size_t found = 0;
  for (; found < plans.size(); ++found) {
    const Plan &p = plans[found];
    if (p.params != params)
      continue;
    bool same = true;
    for (Py_ssize_t i = 0; i < n && same; ++i)
      same = p.inputs[i] == keys[i];
    if (same)
      break;
  }
  if (found == plans.size())
    Py_RETURN_NONE;
  if (found != 0)
    std::swap(plans[0], plans[found]);
  const Plan &plan = plans[0];

  size_t numOutputs = plan.outputShapes.size();
  PyObject *outputs[kMaxTensors];
  void *outputData[kMaxTensors];
  size_t made = 0;
  auto fail = [&]() -> PyObject * {
    for (size_t j = 0; j < made; ++j)
      Py_DECREF(outputs[j]);
    return nullptr;
  };
  for (; made < numOutputs; ++made) {
    // torch.empty(shape, dtype=..., device=...)
    PyObject *callArgs[] = {plan.outputShapes[made], plan.outputDtypes[made],
                            plan.device};
    PyObject *tensor =
        PyObject_Vectorcall(self->empty, callArgs, 1, self->emptyKwnames);
    if (!tensor)
      return fail();
    outputs[made] = tensor;
    PyObject *pointer = PyObject_CallMethodNoArgs(tensor, names.dataPtr);
    if (!pointer) {
      ++made;
      return fail();
    }
    outputData[made] = PyLong_AsVoidPtr(pointer);
    Py_DECREF(pointer);
  }
  // Workspaces come from PyTorch's caching allocator too: stream-ordered, so
  // they may be released as soon as the kernels are queued, and drawn from
  // a CUDA graph's pool while one is captured.
  size_t numWorkspaces = plan.workspaceShapes.size();
  PyObject *workspaces[kMaxTensors] = {};
  void *workspaceData[kMaxTensors] = {};
  auto releaseWorkspaces = [&]() {
    for (size_t w = 0; w < numWorkspaces; ++w)
      Py_XDECREF(workspaces[w]);
  };
  for (size_t w = 0; w < numWorkspaces; ++w) {
    if (!plan.workspaceShapes[w])
      continue;
    PyObject *callArgs[] = {plan.workspaceShapes[w], self->bytesDtype,
                            plan.device};
    workspaces[w] =
        PyObject_Vectorcall(self->empty, callArgs, 1, self->emptyKwnames);
    PyObject *pointer =
        workspaces[w] ? PyObject_CallMethodNoArgs(workspaces[w], names.dataPtr)
                      : nullptr;
    if (!pointer) {
      releaseWorkspaces();
      return fail();
    }
    workspaceData[w] = PyLong_AsVoidPtr(pointer);
    Py_DECREF(pointer);
  }
  attnc_stream stream = nullptr;
  if (!currentStream(self, keys[0].device, stream)) {
    releaseWorkspaces();
    return fail();
  }
  int status = self->planLaunch(plan.handle, inputData, outputData,
                                workspaceData, stream);
  releaseWorkspaces();
  if (status != 0) {
    PyErr_Format(PyExc_RuntimeError, "kernel '%s': %s", self->name->c_str(),
                 self->lastError());
    return fail();
  }
  if (numOutputs == 1)
    return outputs[0];
  PyObject *result = PyTuple_New(static_cast<Py_ssize_t>(numOutputs));
  if (!result)
    return fail();
  for (size_t j = 0; j < numOutputs; ++j)
    PyTuple_SET_ITEM(result, static_cast<Py_ssize_t>(j), outputs[j]);
  return result;
}

void releasePlan(LauncherObject *self, Plan &plan) {
  if (plan.handle)
    self->planFree(plan.handle);
  for (PyObject *o : plan.outputShapes)
    Py_DECREF(o);
  for (PyObject *o : plan.outputDtypes)
    Py_DECREF(o);
  for (PyObject *o : plan.workspaceShapes)
    Py_XDECREF(o);
  for (const TensorKey &key : plan.inputs)
    Py_XDECREF(key.dtype);
  Py_XDECREF(plan.device);
  plan = Plan();
}

/// remember(plan, inputs, params, output_shapes, output_dtypes, device,
///          workspace_bytes): takes the plan handle (an int from
/// attnc_plan_create), which this object frees, for calls on tensors like
/// `inputs` with `params`.
PyObject *Launcher_remember(PyObject *selfObj, PyObject *args) {
  auto *self = reinterpret_cast<LauncherObject *>(selfObj);
  PyObject *handleObj, *inputs, *paramsObj, *shapes, *dtypes, *device,
      *workspaceBytes;
  if (!PyArg_ParseTuple(args, "OO!O!O!O!OO!", &handleObj, &PyTuple_Type,
                        &inputs, &PyTuple_Type, &paramsObj, &PyTuple_Type,
                        &shapes, &PyTuple_Type, &dtypes, &device,
                        &PyTuple_Type, &workspaceBytes))
    return nullptr;
  auto handle = static_cast<attnc_plan>(PyLong_AsVoidPtr(handleObj));
  if (PyErr_Occurred())
    return nullptr;
  Plan plan;
  plan.handle = handle;
  bool ok = PyTuple_GET_SIZE(inputs) == self->numInputs &&
            PyTuple_GET_SIZE(shapes) == PyTuple_GET_SIZE(dtypes) &&
            static_cast<size_t>(PyTuple_GET_SIZE(shapes)) <= kMaxTensors;
  for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(inputs); ++i) {
    TensorKey key;
    void *data;
    ok = readTensor(self, PyTuple_GET_ITEM(inputs, i), key, data,
                    /*gradEnabled=*/false);
    if (ok) {
      Py_INCREF(key.dtype);
      plan.inputs.push_back(key);
    }
  }
  for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(paramsObj); ++i) {
    plan.params.push_back(PyFloat_AsDouble(PyTuple_GET_ITEM(paramsObj, i)));
    ok = !PyErr_Occurred();
  }
  ok = ok && plan.params.size() == self->paramNames->size();
  for (Py_ssize_t j = 0; ok && j < PyTuple_GET_SIZE(shapes); ++j) {
    PyObject *shape = PyTuple_GET_ITEM(shapes, j);
    PyObject *dtype = PyTuple_GET_ITEM(dtypes, j);
    Py_INCREF(shape);
    Py_INCREF(dtype);
    plan.outputShapes.push_back(shape);
    plan.outputDtypes.push_back(dtype);
  }
  ok = ok && static_cast<size_t>(PyTuple_GET_SIZE(workspaceBytes)) <= kMaxTensors;
  for (Py_ssize_t w = 0; ok && w < PyTuple_GET_SIZE(workspaceBytes); ++w) {
    long long bytes = PyLong_AsLongLong(PyTuple_GET_ITEM(workspaceBytes, w));
    ok = !PyErr_Occurred() && bytes >= 0;
    PyObject *shape = ok && bytes > 0 ? Py_BuildValue("(L)", bytes) : nullptr;
    ok = ok && (bytes == 0 || shape);
    plan.workspaceShapes.push_back(shape);
  }
  if (!ok) {
    releasePlan(self, plan);
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError,
                      "remember: inputs unlike the kernel's signature");
    return nullptr;
  }
  Py_INCREF(device);
  plan.device = device;
  std::vector<Plan> &plans = *self->plans;
  if (plans.size() == kMaxPlans) {
    releasePlan(self, plans.back());
    plans.pop_back();
  }
  plans.insert(plans.begin(), plan);
  Py_RETURN_NONE;
}

PyObject *Launcher_num_plans(PyObject *selfObj, PyObject *) {
  auto *self = reinterpret_cast<LauncherObject *>(selfObj);
  return PyLong_FromSize_t(self->plans->size());
}

int Launcher_init(PyObject *selfObj, PyObject *args, PyObject *) {
  auto *self = reinterpret_cast<LauncherObject *>(selfObj);
  const char *name;
  PyObject *functions, *paramNames, *paramDefaults, *torch;
  Py_ssize_t numInputs;
  if (!PyArg_ParseTuple(args, "sO!nO!O!O", &name, &PyTuple_Type, &functions,
                        &numInputs, &PyTuple_Type, &paramNames, &PyTuple_Type,
                        &paramDefaults, &torch))
    return -1;
  void *fns[4];
  if (PyTuple_GET_SIZE(functions) != 4 ||
      PyTuple_GET_SIZE(paramNames) != PyTuple_GET_SIZE(paramDefaults)) {
    PyErr_SetString(PyExc_ValueError, "Launcher: bad signature");
    return -1;
  }
  for (int i = 0; i < 4; ++i) {
    fns[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(functions, i));
    if (!fns[i]) {
      if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "Launcher: NULL runtime function");
      return -1;
    }
  }
  self->name = new std::string(name);
  self->planLaunch = reinterpret_cast<PlanLaunchFn>(fns[0]);
  self->planFree = reinterpret_cast<PlanFreeFn>(fns[1]);
  self->streamWrap = reinterpret_cast<StreamWrapFn>(fns[2]);
  self->lastError = reinterpret_cast<LastErrorFn>(fns[3]);
  self->numInputs = numInputs;
  self->paramNames = new std::vector<PyObject *>();
  self->paramDefaults = new std::vector<double>();
  self->paramHasDefault = new std::vector<bool>();
  self->plans = new std::vector<Plan>();
  self->streams = new std::vector<StreamHandle>();
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(paramNames); ++i) {
    PyObject *paramName = PyTuple_GET_ITEM(paramNames, i);
    PyObject *fallback = PyTuple_GET_ITEM(paramDefaults, i);
    Py_INCREF(paramName);
    self->paramNames->push_back(paramName);
    bool has = fallback != Py_None;
    self->paramHasDefault->push_back(has);
    self->paramDefaults->push_back(has ? PyFloat_AsDouble(fallback) : 0.0);
    if (PyErr_Occurred())
      return -1;
  }
  PyObject *nn = PyObject_GetAttrString(torch, "nn");
  PyObject *cudaC = PyObject_GetAttrString(torch, "_C");
  self->tensorType = PyObject_GetAttrString(torch, "Tensor");
  self->parameterType =
      nn ? PyObject_GetAttrString(nn, "Parameter") : nullptr;
  self->empty = PyObject_GetAttrString(torch, "empty");
  self->gradEnabled = PyObject_GetAttrString(torch, "is_grad_enabled");
  self->bytesDtype = PyObject_GetAttrString(torch, "uint8");
  // A PyTorch built without CUDA has none, and no CUDA tensors either: the
  // launcher then takes no call.
  self->rawStream =
      cudaC ? PyObject_GetAttrString(cudaC, "_cuda_getCurrentRawStream")
            : nullptr;
  PyErr_Clear();
  Py_XDECREF(nn);
  Py_XDECREF(cudaC);
  self->emptyKwnames = Py_BuildValue("(ss)", "dtype", "device");
  if (!self->tensorType || !self->parameterType || !self->empty ||
      !self->gradEnabled || !self->bytesDtype || !self->emptyKwnames) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_RuntimeError,
                      "Launcher: this PyTorch lacks what the launcher uses");
    return -1;
  }
  return 0;
}

void Launcher_dealloc(PyObject *selfObj) {
  auto *self = reinterpret_cast<LauncherObject *>(selfObj);
  if (self->plans) {
    for (Plan &plan : *self->plans)
      releasePlan(self, plan);
    delete self->plans;
  }
  if (self->paramNames) {
    for (PyObject *o : *self->paramNames)
      Py_DECREF(o);
    delete self->paramNames;
  }
  delete self->paramDefaults;
  delete self->paramHasDefault;
  // Wrapped streams are the caller's; their handles are small and kept for
  // the process, as _runtime.py's are.
  delete self->streams;
  delete self->name;
  for (PyObject *o : {self->tensorType, self->parameterType, self->empty,
                      self->gradEnabled, self->rawStream, self->bytesDtype,
                      self->emptyKwnames})
    Py_XDECREF(o);
  // Instances of a heap type hold a reference to it.
  PyTypeObject *type = Py_TYPE(selfObj);
  type->tp_free(selfObj);
  Py_DECREF(type);
}

PyMethodDef launcherMethods[] = {
    {"remember", Launcher_remember, METH_VARARGS,
     "remember(plan, inputs, params, output_shapes, output_dtypes, device, "
     "workspace_bytes)"},
    {"launch", Launcher_launch, METH_VARARGS,
     "launch(inputs, params): as a call, for autograd's record of one"},
    {"num_plans", Launcher_num_plans, METH_NOARGS, "plans kept"},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot launcherSlots[] = {
    {Py_tp_doc,
     const_cast<char *>(
         "Launcher(name, (plan_launch, plan_free, stream_wrap, last_error), "
         "num_inputs, param_names, param_defaults, torch): calls a "
         "GpuKernel's plans; None for a call it does not take.")},
    {Py_tp_new, reinterpret_cast<void *>(PyType_GenericNew)},
    {Py_tp_init, reinterpret_cast<void *>(Launcher_init)},
    {Py_tp_dealloc, reinterpret_cast<void *>(Launcher_dealloc)},
    {Py_tp_call, reinterpret_cast<void *>(Launcher_call)},
    {Py_tp_methods, launcherMethods},
    {0, nullptr}};

PyType_Spec launcherSpec = {"attnc._launcher.Launcher", sizeof(LauncherObject),
                            0, Py_TPFLAGS_DEFAULT, launcherSlots};

PyModuleDef launcherModule = {PyModuleDef_HEAD_INIT,
                              "_launcher",
                              "GpuKernel calls on torch tensors, in C.",
                              -1,
                              nullptr,
                              nullptr,
                              nullptr,
                              nullptr,
                              nullptr};

} // namespace

PyMODINIT_FUNC PyInit__launcher(void) {
  if (!internNames())
    return nullptr;
  PyObject *module = PyModule_Create(&launcherModule);
  if (!module)
    return nullptr;
  PyObject *type = PyType_FromSpec(&launcherSpec);
  if (!type || PyModule_AddObject(module, "Launcher", type) < 0) {
    Py_XDECREF(type);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
