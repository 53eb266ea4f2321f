/*
 * A static program of L1's that L2 runs through /host (lkvm's default
 * rootfs) or as `lkvm sandbox ./prog`: it says where it runs (machine,
 * working directory, the root its kernel was told about) and exits with
 * the status it is given, so the lab can tell it ran inside L2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct utsname u;
    char cwd[512] = "?";
    char cmdline[4096] = "";
    char root[256] = "none";

    if (uname(&u) != 0)
        strcpy(u.machine, "?");
    if (!getcwd(cwd, sizeof(cwd)))
        strcpy(cwd, "?");
    FILE *f = fopen("/proc/cmdline", "r");
    if (f) {
        if (!fgets(cmdline, sizeof(cmdline), f))
            cmdline[0] = 0;
        fclose(f);
    }
    for (char *w = strtok(cmdline, " \n"); w; w = strtok(NULL, " \n")) {
        if (strncmp(w, "root=", 5) == 0) {
            snprintf(root, sizeof(root), "%s", w + 5);
            break;
        }
    }
    printf("LKVM-HOSTPROG arch=%s token=%s cwd=%s root=%s\n", u.machine,
           argc > 1 ? argv[1] : "", cwd, root);
    fflush(stdout);
    return argc > 2 ? atoi(argv[2]) : 0;
}
