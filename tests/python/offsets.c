/* The CPython struct offsets scalp-bpf reads (tracer-user/src/python/offsets.json), from the
   version's own headers: compiled against a CPython's include directory, it prints
   "name offset" lines that tests/test_python_sites.py compares with the table. Keys that do not
   apply to a version are not printed (and not in its table entry). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#endif
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>
#endif
#define P(name, value) printf("%s %zu\n", name, (size_t)(value))
int main(void) {
#if PY_VERSION_HEX < 0x030B0000
  /* 3.9, 3.10: the thread list's head is tstate_head; a thread state knows its pthread_t
     (thread_id), not its kernel id; the frame chain is PyFrameObjects (f_back), the position an
     int (f_lasti). */
  P("interp_threads_head", offsetof(PyInterpreterState, tstate_head));
  P("tstate_thread_id", offsetof(PyThreadState, thread_id));
  P("tstate_frame", offsetof(PyThreadState, frame));
  P("frame_code", offsetof(PyFrameObject, f_code));
  P("frame_previous", offsetof(PyFrameObject, f_back));
  P("frame_instr", offsetof(PyFrameObject, f_lasti));
#else
  P("interp_threads_head", offsetof(PyInterpreterState, threads.head));
  P("tstate_native_thread_id", offsetof(PyThreadState, native_thread_id));
  P("frame_previous", offsetof(_PyInterpreterFrame, previous));
#if PY_VERSION_HEX < 0x030D0000
  /* 3.11, 3.12: tstate->cframe->current_frame. */
  P("tstate_frame", offsetof(PyThreadState, cframe));
  P("cframe_current_frame", offsetof(_PyCFrame, current_frame));
  P("frame_code", offsetof(_PyInterpreterFrame, f_code));
  P("frame_instr", offsetof(_PyInterpreterFrame, prev_instr));
#else
  /* 3.13: no cframe; f_executable may be None (the C stack's shim frames). The runtime
     starts with _Py_DebugOffsets, which scalp-bpf checks the table against. */
  P("interp_runtime", offsetof(PyInterpreterState, runtime));
  P("tstate_frame", offsetof(PyThreadState, current_frame));
  P("frame_code", offsetof(_PyInterpreterFrame, f_executable));
  P("frame_instr", offsetof(_PyInterpreterFrame, instr_ptr));
#endif
  P("code_qualname", offsetof(PyCodeObject, co_qualname));
  P("code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
#endif
  P("tstate_next", offsetof(PyThreadState, next));
  P("code_filename", offsetof(PyCodeObject, co_filename));
  P("code_name", offsetof(PyCodeObject, co_name));
  P("code_firstlineno", offsetof(PyCodeObject, co_firstlineno));
#if PY_VERSION_HEX < 0x030A0000
  P("code_linetable", offsetof(PyCodeObject, co_lnotab));
#else
  P("code_linetable", offsetof(PyCodeObject, co_linetable));
#endif
  P("bytes_sval", offsetof(PyBytesObject, ob_sval));
  P("var_size", offsetof(PyVarObject, ob_size));
  P("ascii_size", sizeof(PyASCIIObject));
  P("compact_size", sizeof(PyCompactUnicodeObject));
  P("ascii_state", offsetof(PyASCIIObject, state));
  P("ascii_length", offsetof(PyASCIIObject, length));
  return 0;
}
