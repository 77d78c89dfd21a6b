#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct entry { char word[32]; int count; };
static int cmp(const void *a, const void *b) {
    return ((const struct entry *)b)->count - ((const struct entry *)a)->count;
}
int main(void) {
    static struct entry table[4096];
    int used = 0, c, len = 0;
    char word[32];
    while ((c = getchar()) != EOF) {
        if (isalpha(c) && len < 31) { word[len++] = tolower(c); continue; }
        if (!len) continue;
        word[len] = 0; len = 0;
        int i;
        for (i = 0; i < used && strcmp(table[i].word, word); i++) ;
        if (i == used && used < 4096) strcpy(table[used++].word, word);
        if (i < 4096) table[i].count++;
    }
    qsort(table, used, sizeof table[0], cmp);
    for (int i = 0; i < 10 && i < used; i++) printf("%6d %s\n", table[i].count, table[i].word);
    return 0;
}
