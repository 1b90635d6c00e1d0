/* A PKCS#11 module for the tests that counts logins (test_pkcs11_logins.py builds it with cc):
 * it hands out the function list of the module $SPY_TARGET (SoftHSM) with C_Login wrapped,
 * and appends a line to $SPY_LOG when a process loads it ("loaded pid=N") and on each login
 * ("C_Login pid=N rv=0x..", rv 0 for a PIN the token took). The log is opened when the module
 * is loaded, before mtlsd enters its sandbox.
 *
 * No PKCS#11 header (not every test machine has one): a v2.x function list is a version and
 * 68 function pointers in a fixed order, C_Login the 19th of them. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef unsigned long ck_rv;
typedef ck_rv (*ck_function)(void);
typedef ck_rv (*ck_login)(unsigned long session, unsigned long user, unsigned char* pin,
                          unsigned long len);

struct function_list {
  unsigned char version[2];
  ck_function functions[68];
};

enum { kLogin = 18 };

static struct function_list mine;
static struct function_list* real;
static int log_fd = -1;

static void say(const char* what, unsigned long rv) {
  char line[128];
  int n = snprintf(line, sizeof line, "%s pid=%ld rv=0x%lx\n", what, (long)getpid(), rv);
  if (log_fd >= 0 && n > 0) (void)!write(log_fd, line, (size_t)n);
}

static ck_rv spy_login(unsigned long session, unsigned long user, unsigned char* pin,
                       unsigned long len) {
  ck_rv rv = ((ck_login)real->functions[kLogin])(session, user, pin, len);
  say("C_Login", rv);
  return rv;
}

ck_rv C_GetFunctionList(struct function_list** out) {
  if (!real) {
    const char* target = getenv("SPY_TARGET");
    const char* log = getenv("SPY_LOG");
    void* lib = target ? dlopen(target, RTLD_NOW | RTLD_LOCAL) : NULL;
    ck_rv (*get)(struct function_list**) =
        lib ? (ck_rv(*)(struct function_list**))dlsym(lib, "C_GetFunctionList") : NULL;
    if (!get || get(&real) != 0) return 5; /* CKR_GENERAL_ERROR */
    mine = *real;
    mine.functions[kLogin] = (ck_function)spy_login;
    if (log) log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    say("loaded", 0);
  }
  *out = &mine;
  return 0;
}
