/* status.h -- what a kernel that can fail returns.  A kernel fails only
 * before it has written any output, except where its header says otherwise
 * (attention). */
#ifndef PT_STATUS_H
#define PT_STATUS_H

enum {
    PT_OK = 0,
    PT_ERR_NOMEM = -1,  /* a working buffer could not be allocated */
    PT_ERR_PATH = -2,   /* an operand packed for another kernel path */
    PT_ERR_ARG = -3,    /* an argument the kernel's header rules out */
};

#endif
