// Spec Appendix A.1, typed from the appendix: the DualPipe golden trace for N=4 ranks and C=8
// micro-batches, in the notation `dsv3-train schedule` prints. Test data only, shared by the
// schedule tests and the CLI tests so the trace is typed once.
#ifndef DSV3_ENGINE_PARALLEL_APPENDIX_A_TRACE_H_
#define DSV3_ENGINE_PARALLEL_APPENDIX_A_TRACE_H_

namespace dsv3::parallel::testdata {

inline constexpr char kAppendixA1[] =
    "rank 0 : Fa0 {sFa0>1} Fa1 {sFa1>1} Fa2 {rFb0>1} Fb0 {sFa2>1} Bib0 {sBb0>1,rFb1>1} Wb0 Fb1 "
    "Fa3&Bb1 {sFa3>1,sBb1>1,rFb2>1,rBa0>1} Fb2&Ba0 Bb2 {sBb2>1,rFb3>1,rBa1>1} Fb3&Ba1 Bb3 "
    "{sBb3>1,rBa2>1} Bia2 Wa2 {rBa3>1} Bia3 Wa3\n"
    "rank 1 : {rFa0>0} Fa0 {sFa0>2,rFa1>0,rFb0>2} Fb0 {sFb0>0} Fa1 {sFa1>2,rFa2>0,rFb1>2} Fb1 Fa2 "
    "{sFb1>0,rBb0>0} Bb0 {sFa2>2,sBb0>2,rFb2>2,rBa0>2} Fb2&Ba0 {sFb2>0,sBa0>0,rFa3>0,rBb1>0} "
    "Fa3&Bb1 {sFa3>2,sBb1>2,rFb3>2,rBa1>2} Fb3&Ba1 {sFb3>0,sBa1>0,rBb2>0} Bb2 {sBb2>2,rBa2>2} Ba2 "
    "{sBa2>0,rBb3>0} Bib3 {sBb3>2,rBa3>2} Bia3 {sBa3>0} Wb3 Wa3\n"
    "rank 2 : {rFb0>3} Fb0 {sFb0>1,rFb1>3,rFa0>1} Fa0 {sFa0>3} Fb1 {sFb1>1,rFb2>3,rFa1>1} Fa1 Fb2 "
    "{sFa1>3,rBa0>3} Ba0 {sFb2>1,sBa0>1,rFa2>1,rBb0>1} Fa2&Bb0 {sFa2>3,sBb0>3,rFb3>3,rBa1>3} "
    "Fb3&Ba1 {sFb3>1,sBa1>1,rFa3>1,rBb1>1} Fa3&Bb1 {sFa3>3,sBb1>3,rBa2>3} Ba2 {sBa2>1,rBb2>1} Bb2 "
    "{sBb2>3,rBa3>3} Bia3 {sBa3>1,rBb3>1} Bib3 {sBb3>3} Wa3 Wb3\n"
    "rank 3 : Fb0 {sFb0>2} Fb1 {sFb1>2} Fb2 {rFa0>2} Fa0 {sFb2>2} Bia0 {sBa0>2,rFa1>2} Wa0 Fa1 "
    "Fb3&Ba1 {sFb3>2,sBa1>2,rFa2>2,rBb0>2} Fa2&Bb0 Ba2 {sBa2>2,rFa3>2,rBb1>2} Fa3&Bb1 Ba3 "
    "{sBa3>2,rBb2>2} Bib2 Wb2 {rBb3>2} Bib3 Wb3\n";

}  // namespace dsv3::parallel::testdata

#endif  // DSV3_ENGINE_PARALLEL_APPENDIX_A_TRACE_H_
