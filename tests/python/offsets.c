/* The CPython struct offsets scalp-bpf reads (tracer-user/src/python/offsets.json), from the
   version's own headers: compiled against a CPython's include directory, it prints
   "name offset" lines that tests/test_python_sites.py compares with the table. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include "internal/pycore_frame.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"
int main(void) {
  printf("interp_threads_head %zu\n", offsetof(PyInterpreterState, threads.head));
  printf("tstate_next %zu\n", offsetof(PyThreadState, next));
  printf("tstate_native_thread_id %zu\n", offsetof(PyThreadState, native_thread_id));
  printf("tstate_cframe %zu\n", offsetof(PyThreadState, cframe));
  printf("cframe_current_frame %zu\n", offsetof(_PyCFrame, current_frame));
  printf("frame_code %zu\n", offsetof(_PyInterpreterFrame, f_code));
  printf("frame_previous %zu\n", offsetof(_PyInterpreterFrame, previous));
  printf("frame_prev_instr %zu\n", offsetof(_PyInterpreterFrame, prev_instr));
  printf("code_filename %zu\n", offsetof(PyCodeObject, co_filename));
  printf("code_qualname %zu\n", offsetof(PyCodeObject, co_qualname));
  printf("code_name %zu\n", offsetof(PyCodeObject, co_name));
  printf("code_firstlineno %zu\n", offsetof(PyCodeObject, co_firstlineno));
  printf("code_linetable %zu\n", offsetof(PyCodeObject, co_linetable));
  printf("code_adaptive %zu\n", offsetof(PyCodeObject, co_code_adaptive));
  printf("bytes_sval %zu\n", offsetof(PyBytesObject, ob_sval));
  printf("var_size %zu\n", offsetof(PyVarObject, ob_size));
  printf("ascii_size %zu\n", sizeof(PyASCIIObject));
  printf("compact_size %zu\n", sizeof(PyCompactUnicodeObject));
  printf("ascii_state %zu\n", offsetof(PyASCIIObject, state));
  printf("ascii_length %zu\n", offsetof(PyASCIIObject, length));
  return 0;
}
